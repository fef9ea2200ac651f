"""lockbox on real nodes over loopback mTLS: a file made on one member appears on the
others (byte-identical ciphertext everywhere), a locked member holds ciphertext only and
shows the plaintext on unlock, non-members are refused, deletes, renames and concurrent
edits propagate, and altered ciphertext is rejected with the plaintext untouched."""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from fleet_helpers import FakeEnrolled, introduce, wait_until
from puddle.puddle_helpers import new_puddle, puddle_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import SwarmNode
from vigo_swarm.lockbox import LockboxConfig, LockboxService
from vigo_swarm.lockbox.service import PUSH_PATH, SYNC_PATH
from vigo_swarm.puddle import Person, PuddleKey, PuddleService
from vigo_swarm.puddle.service import encode_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
UID = os.geteuid()


@dataclass
class Envoy:
    enrolled: FakeEnrolled
    node: SwarmNode
    puddle: PuddleService
    lockbox: LockboxService
    home: Path
    state: Path

    @property
    def box(self) -> Path:
        return self.home / "lockbox"

    def blobs(self) -> dict[str, bytes]:
        d = self.state / ".blobs"
        if not d.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and len(p.name) == 64}


async def start_envoys(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, names: list[str], base: int
) -> list[Envoy]:
    envoys = []
    for i, name in enumerate(names):
        enrolled, node, pud, home = puddle_envoy(ca, tmp_path, name, base + i)
        state = tmp_path / f"{name}-lockbox"
        lb = LockboxService(node, pud, state, LockboxConfig(rescan_s=0.3, sync_interval_s=0.3))
        await nursery.start(node.run)
        await nursery.start(pud.run)
        await nursery.start(lb.run)
        envoys.append(Envoy(enrolled, node, pud, lb, home, state))
    await introduce([e.node for e in envoys])
    return envoys


async def make_puddle(owner: Envoy, joiners: list[Envoy], locked: list[Envoy]) -> PuddleKey:
    key, puddle = new_puddle(owner.enrolled.uuid)
    await owner.puddle.init(UID, encode_state(puddle))
    await owner.puddle.unlock(UID, key.seed, 0)
    for e in [*joiners, *locked]:
        code = (await owner.puddle.pair(UID))["code"]
        await e.puddle.join(UID, owner.enrolled.name, code)
    for e in joiners:
        await e.puddle.unlock(UID, key.seed, 0)
    want = {owner.enrolled.uuid} | {e.enrolled.uuid for e in [*joiners, *locked]}
    everyone = [owner, *joiners, *locked]
    await wait_until(lambda: all(set(e.read_members()) == want for e in everyone))
    return key


def _members(e: Envoy) -> list[uuid.UUID]:
    from vigo_swarm.puddle import PuddleDir

    try:
        return list(PuddleDir(Person(UID, os.getegid(), e.home)).read().members.members)
    except Exception:
        return []


Envoy.read_members = _members  # type: ignore[attr-defined]


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def listing(root: Path) -> dict[str, bytes]:
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


async def test_a_file_reaches_every_member_and_a_locked_member_decrypts_on_unlock(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b, d, e = await start_envoys(ca, tmp_path, nursery, ["a", "b", "d", "e"], 20)
    key = await make_puddle(a, [b], [e])
    await wait_until(lambda: a.box.is_dir())
    secret_name = "taxes/return-2024-confidential.txt"
    content = b"my very secret return " * 5000
    (a.box / "taxes").mkdir()
    (a.box / secret_name).write_bytes(content)
    os.chmod(a.box / secret_name, 0o640)

    await wait_until(lambda: read(b.box / secret_name) == content)
    assert (b.box / secret_name).stat().st_mode & 0o777 == 0o640
    assert (b.box / secret_name).stat().st_mtime_ns == (a.box / secret_name).stat().st_mtime_ns
    # E is locked: it holds the same ciphertext, byte for byte, and no plaintext
    await wait_until(lambda: len(e.blobs()) == 1 and e.blobs() == a.blobs() == b.blobs())
    assert listing(e.box) == {}
    assert (await e.lockbox.status(UID))["state"] == "locked"
    assert (await e.lockbox.status(UID))["pending_writes"] == 1
    # D is no member: it holds nothing and its requests are refused
    assert d.blobs() == {} and listing(d.box) == {}
    await e.puddle.unlock(UID, key.seed, 0)
    await wait_until(lambda: read(e.box / secret_name) == content)

    # no plaintext name or content in any envoy's lockbox state or in the logs
    logs = caplog.text
    for env in (a, b, d, e):
        for p in env.state.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert b"confidential" not in data and b"my very secret" not in data, p
    assert "confidential" not in logs and "taxes" not in logs
    assert "new records" in logs  # the logs did record the work


async def test_non_members_are_refused_every_lockbox_route(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b, d = await start_envoys(ca, tmp_path, nursery, ["a", "b", "d"], 30)
    await make_puddle(a, [b], [])
    (a.box / "note.txt").write_bytes(b"hello")
    await wait_until(lambda: read(b.box / "note.txt") == b"hello")
    sha = next(iter(a.blobs()))
    puddle_hex = next(iter(a.lockbox.boxes))
    peer_a = next(p for p in d.node.peers() if p.uuid == a.enrolled.uuid)
    async with await d.node.dial(peer_a) as conn:
        for suffix in ("info", "have", "chunks/0"):
            resp = await conn.request("GET", f"/swarm/v1/blobs/{sha}/{suffix}")
            assert resp.status == 403 and resp.json()["error"]["code"] == "not_member"
        body = json.dumps({"puddle": puddle_hex, "ids": []}).encode()
        resp = await conn.request("POST", SYNC_PATH, body=body)
        assert resp.status == 403
        body = json.dumps({"puddle": puddle_hex, "records": []}).encode()
        resp = await conn.request("POST", PUSH_PATH, body=body)
        assert resp.status == 403
    assert a.lockbox.stats.refusals == 5
    # and a member is served the same blob
    peer_a_from_b = next(p for p in b.node.peers() if p.uuid == a.enrolled.uuid)
    async with await b.node.dial(peer_a_from_b) as conn:
        resp = await conn.request("GET", f"/swarm/v1/blobs/{sha}/info")
        assert resp.status == 200 and resp.json()["sha256"] == sha


async def test_delete_rename_and_concurrent_edits_propagate_and_keep_both(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b = await start_envoys(ca, tmp_path, nursery, ["a", "b"], 40)
    await make_puddle(a, [b], [])
    (a.box / "keep.txt").write_bytes(b"keep")
    (a.box / "old-name.txt").write_bytes(b"renamed content")
    (a.box / "gone.txt").write_bytes(b"to be deleted")
    want = {"keep.txt": b"keep", "old-name.txt": b"renamed content", "gone.txt": b"to be deleted"}
    await wait_until(lambda: listing(b.box) == want)

    (b.box / "gone.txt").unlink()
    (b.box / "old-name.txt").rename(b.box / "new-name.txt")
    want = {"keep.txt": b"keep", "new-name.txt": b"renamed content"}
    await wait_until(lambda: listing(a.box) == want and listing(b.box) == want)

    # both edit keep.txt before either hears of the other's edit
    a.lockbox.config = LockboxConfig(rescan_s=0.3, sync_interval_s=0.3, watch=False)
    async with a.lockbox._pass_lock, b.lockbox._pass_lock:  # hold both passes
        (a.box / "keep.txt").write_bytes(b"edited on a")
        (b.box / "keep.txt").write_bytes(b"edited on b, later")
        os.utime(a.box / "keep.txt", ns=(1_700_000_000 * 10**9,) * 2)
        os.utime(b.box / "keep.txt", ns=(1_700_000_100 * 10**9,) * 2)

    def settled() -> bool:
        la, lb = listing(a.box), listing(b.box)
        return la == lb and len(la) == 3

    await wait_until(settled)
    files = listing(a.box)
    assert files["keep.txt"] == b"edited on b, later"  # the later edit holds the name
    copies = [n for n in files if n.startswith("keep.sync-conflict-")]
    assert len(copies) == 1 and files[copies[0]] == b"edited on a"
    assert copies[0] == "keep.sync-conflict-20231114-221320-a.txt"


async def test_a_locked_member_records_new_files_with_the_public_key_only(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, e = await start_envoys(ca, tmp_path, nursery, ["a", "e"], 50)
    await make_puddle(a, [], [e])
    await wait_until(lambda: e.box.is_dir())
    (e.box / "from-locked.txt").write_bytes(b"written while locked")
    await wait_until(lambda: read(a.box / "from-locked.txt") == b"written while locked")
    assert (await e.lockbox.status(UID))["state"] == "locked"


async def test_altered_ciphertext_is_rejected_and_the_plaintext_left_alone(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await start_envoys(ca, tmp_path, nursery, ["a", "b"], 60)
    key = await make_puddle(a, [b], [])
    (a.box / "doc.txt").write_bytes(b"version one")
    await wait_until(lambda: read(b.box / "doc.txt") == b"version one")
    await b.puddle.lock(UID)
    (a.box / "doc.txt").write_bytes(b"version two, longer")

    def b_holds_version_two() -> bool:
        box = next(iter(b.lockbox.boxes.values()))
        return len(box.records) == 2 and len(b.blobs()) == 1 and b.blobs() == a.blobs()

    await wait_until(b_holds_version_two)
    # flip one bit of the new ciphertext on both (A has written its plaintext already;
    # A's copy no longer matches its hash, so B cannot fetch a good one either)
    (sha,) = b.blobs()
    for env in (a, b):
        blob = env.state / ".blobs" / sha
        os.chmod(blob, 0o644)
        data = bytearray(blob.read_bytes())
        data[-5] ^= 0x01
        blob.write_bytes(bytes(data))
    await b.puddle.unlock(UID, key.seed, 0)
    await wait_until(lambda: b.lockbox.stats.decrypt_failures >= 1)
    assert read(b.box / "doc.txt") == b"version one"  # untouched
    assert not [p for p in b.box.iterdir() if p.name != "doc.txt"]  # no temp file left
    assert "failed to decrypt" in caplog.text and "doc.txt" not in caplog.text
    status = await b.lockbox.status(UID)
    assert "failed to decrypt" in status["last_error"]
