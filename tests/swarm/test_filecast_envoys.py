"""filecast between real envoy nodes on loopback: a seeder imports the blob from its seed
dir, every node fetches it and materializes the target; a revoke removes it everywhere.
Also the pure plan, and a peer offering a chunk list the record did not sign."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import trio
from fleet_helpers import loopback_node, make_envoy
from manifest_helpers import SERVER_KEY

from vigo_server_lite.ca import FleetCA
from vigo_swarm import filecast
from vigo_swarm.blobstore import BlobInfo, describe_file
from vigo_swarm.filecast import (
    FilecastService,
    live_filecast,
    matches_record,
    plan,
    settled_state,
)
from vigo_swarm.gossip import GossipConfig, ManifestGossip
from vigo_swarm.hlc import pack
from vigo_swarm.manifest import RecordFields, Retention, sign, tombstone_fields
from vigo_swarm.manifest_store import ManifestStore
from vigo_swarm.transfer import TransferConfig

AUTH = {"server": SERVER_KEY.verify_key.encode()}
CHUNK = 64 * 1024


def stamp() -> int:
    return pack(int(time.time() * 1000), 0)


def record_for(info: BlobInfo, target: str, **kw: object):  # type: ignore[no-untyped-def]
    return sign(
        RecordFields(
            key="filecast/" + uuid.uuid5(uuid.NAMESPACE_URL, target).hex,
            blob=info.sha256,
            size_bytes=info.size_bytes,
            chunk_bytes=info.chunk_bytes,
            chunks_digest=info.chunks_digest,
            targets=(target,),
            retention=kw.get("retention", Retention.until_revoked()),  # type: ignore[arg-type]
            tombstone=False,
            hlc=stamp(),
            origin="server",
        ),
        SERVER_KEY,
    )


async def start(
    ca: FleetCA, tmp: Path, nursery: trio.Nursery, n: int, mport: int, seed_dir: Path | None = None
) -> FilecastService:
    env = make_envoy(ca, tmp, f"f{n}")
    node = loopback_node(env, n, mport)
    gossip = ManifestGossip(
        node,
        ManifestStore(tmp / f"f{n}.db", AUTH),
        GossipConfig(min_gap_s=0.2, anti_entropy_interval_s=1),
    )
    svc = FilecastService(
        node,
        gossip,
        tmp / f"f{n}" / "swarm",
        seed_dirs=(seed_dir,) if seed_dir else (),
        transfer=TransferConfig(refresh_have_s=0.1),
        rescan_s=0.3,
    )
    await nursery.start(node.run)
    await nursery.start(gossip.run)
    await nursery.start(svc.run)
    return svc


def info_of(letter: str, *, fill: int = 0, extra: int = 0) -> BlobInfo:
    """A two-chunk blob description (the hashes need not be real for the pure tests)."""
    return BlobInfo(letter * 64, CHUNK + 10 + extra, CHUNK, (bytes([fill]) * 32, b"\1" * 32))


def seeded(tmp: Path, size: int, info_beside: bytes | None = None) -> tuple[Path, bytes, BlobInfo]:
    """A seed dir holding ``size`` random bytes under their hash: (dir, bytes, info).
    ``info_beside``: also write these bytes as ``<hash>.info.json`` (b"" for the real
    chunk list, as the server lite's seed directory has it)."""
    seed_dir = tmp / "seed"
    seed_dir.mkdir()
    content = os.urandom(size)
    src = tmp / "motd"
    src.write_bytes(content)
    info = describe_file(src, CHUNK)
    (seed_dir / info.sha256).write_bytes(content)
    if info_beside is not None:
        beside = seed_dir / (info.sha256 + ".info.json")
        beside.write_bytes(info_beside or info.to_json())
    return seed_dir, content, info


async def seeder_and_receiver(
    tmp: Path, nursery: trio.Nursery, n: int
) -> tuple[FilecastService, FilecastService, bytes, BlobInfo]:
    """A seeder (number ``n``) holding a 5-chunk blob and a receiver (``n + 1``) that
    has discovered it: (seeder, receiver, the blob's bytes, its info)."""
    ca = FleetCA.load_or_create(tmp / "ca")
    mport = 40000 + uuid.uuid4().int % 20000
    seed_dir, content, info = seeded(tmp, 5 * CHUNK + 3)
    seeder = await start(ca, tmp, nursery, n, mport, seed_dir)
    receiver = await start(ca, tmp, nursery, n + 1, mport)
    await wait_until(lambda: len(receiver.node.peers()) == 1, "discovery")
    return seeder, receiver, content, info


async def wait_until(pred, what: str, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)


@pytest.mark.integration
async def test_distribute_then_revoke_across_three_envoys(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    mport = 40000 + uuid.uuid4().int % 20000
    seed_dir, content, info = seeded(tmp_path, 30 * CHUNK + 7)
    svcs = [await start(ca, tmp_path, nursery, 100, mport, seed_dir)]
    svcs += [await start(ca, tmp_path, nursery, 101 + i, mport) for i in range(2)]
    await wait_until(lambda: all(len(s.node.peers()) == 2 for s in svcs), "discovery")

    rec = record_for(info, "etc/motd")
    await svcs[0].gossip.merge([rec], "server")

    def arrived(s: FilecastService) -> bool:
        link = s.files_root / "etc" / "motd"
        return link.is_symlink() and link.resolve().read_bytes() == content

    await wait_until(lambda: all(arrived(s) for s in svcs), "the file on every envoy")
    sources = [set(b.progress.sources) for s in svcs[1:] for b in s.blobs.values() if b.progress]
    assert sources and all(sources)

    gone = sign(tombstone_fields(rec.key, hlc=stamp(), origin="server"), SERVER_KEY)
    await svcs[2].gossip.merge([gone], "server")
    await wait_until(
        lambda: all(
            not (s.files_root / "etc" / "motd").exists() and s.store.blob_path(info.sha256) is None
            for s in svcs
        ),
        "the revoke everywhere: link removed, blob collected",
    )


def test_plan_links_fetches_unlinks_and_keeps_pinned() -> None:
    a = info_of("a")
    b = info_of("b")
    ra = record_for(a, "x/one", retention=Retention.pinned())
    rb = record_for(b, "x/two")
    p = plan([ra, rb], complete={a.sha256}, links={"x/stale": "c" * 64})
    assert [r.blob for r in p.fetch] == [b.sha256]
    assert p.link == (("x/one", a.sha256),)
    assert p.unlink == ("x/stale",)
    assert p.pinned == {a.sha256} and p.referenced == {a.sha256, b.sha256}
    expired = record_for(a, "x/old", retention=Retention.expires_at(time.time() - 1))
    assert live_filecast([expired, ra], time.time()) == [ra]


def test_a_replaced_target_keeps_its_old_blob_until_the_new_one_is_complete() -> None:
    old, new = info_of("a"), info_of("b")
    replacing = record_for(new, "etc/motd")
    during = plan([replacing], complete={old.sha256}, links={"etc/motd": old.sha256})
    assert [r.blob for r in during.fetch] == [new.sha256]
    assert during.link == () and during.unlink == ()
    assert old.sha256 in during.referenced  # not collected: the link still needs it
    after = plan([replacing], complete={old.sha256, new.sha256}, links={"etc/motd": old.sha256})
    assert after.link == (("etc/motd", new.sha256),)
    assert after.referenced == {new.sha256}  # collectable once the link moved


def test_a_held_blob_settles_materialized_only_when_every_target_links_to_it() -> None:
    a, b = "a" * 64, "b" * 64
    both = ("etc/motd", "etc/issue")
    assert settled_state(a, both, set(), {"etc/motd": a, "etc/issue": a}) is None  # fetching
    assert settled_state(a, both, {a}, {"etc/motd": a}) == "complete"
    assert settled_state(a, both, {a}, {"etc/motd": a, "etc/issue": b}) == "complete"
    assert settled_state(a, both, {a}, {"etc/motd": a, "etc/issue": a}) == "materialized"


def test_a_chunk_list_the_record_did_not_sign_is_refused() -> None:
    info = info_of("a")
    rec = record_for(info, "t")
    assert matches_record(info, rec) is None
    forged = info_of("a", fill=7)
    assert "chunk list" in (matches_record(forged, rec) or "")
    assert "size" in (matches_record(info_of("a", extra=1), rec) or "")


@pytest.mark.integration
async def test_a_blob_linked_before_its_fetch_returns_stays_materialized(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconcile loop can link a blob the moment it is complete, before the fetch
    that completed it returns; the fetch's end must not set it back to "complete"
    (check-in would then never report it materialized: a CI flake once)."""
    seeder, receiver, content, info = await seeder_and_receiver(tmp_path, nursery, 110)

    class LinkedFirst(filecast.Fetcher):
        async def fetch(self) -> Path:
            path = await super().fetch()
            async with trio.open_nursery() as inner:
                await receiver.reconcile(inner)  # the loop got there first: it links
            assert receiver.blobs[info.sha256].state == "materialized"
            return path

    monkeypatch.setattr(filecast, "Fetcher", LinkedFirst)
    await seeder.gossip.merge([record_for(info, "etc/motd")], "server")
    await wait_until(
        lambda: (
            info.sha256 in receiver.blobs
            and receiver.blobs[info.sha256].state in ("materialized", "complete")
            and info.sha256 not in receiver._fetching
        ),
        "the fetch to finish",
    )
    assert receiver.blobs[info.sha256].state == "materialized"
    assert (receiver.files_root / "etc" / "motd").resolve().read_bytes() == content


async def test_a_fetch_begun_from_a_stale_plan_does_not_unsettle_a_materialized_blob(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A reconcile pass that saw the blob missing can start a second fetch just after
    the first one ended and the next pass linked the blob (a CI flake under load: the
    envoy then reported "complete" for good). That fetch must not run, and whatever
    state it leaves, the next pass settles the blob back to materialized."""
    seeder, receiver, content, info = await seeder_and_receiver(tmp_path, nursery, 112)
    rec = record_for(info, "etc/motd")
    await seeder.gossip.merge([rec], "server")
    await wait_until(
        lambda: (
            info.sha256 in receiver.blobs and receiver.blobs[info.sha256].state == "materialized"
        ),
        "the blob materialized",
    )
    await receiver._obtain(rec)  # what the stale plan starts
    assert receiver.blobs[info.sha256].state == "materialized"
    receiver.blobs[info.sha256].state = "complete"  # as an older build's stale fetch left it
    async with trio.open_nursery() as inner:
        await receiver.reconcile(inner)
    assert receiver.blobs[info.sha256].state == "materialized"
    assert (receiver.files_root / "etc" / "motd").resolve().read_bytes() == content


async def seeder_with_info_beside(
    tmp: Path, nursery: trio.Nursery, n: int, info_beside: bytes = b""
) -> tuple[FilecastService, FilecastService, bytes, BlobInfo]:
    """``seeder_and_receiver`` with a 9-chunk blob whose chunk list lies beside it."""
    ca = FleetCA.load_or_create(tmp / "ca")
    mport = 40000 + uuid.uuid4().int % 20000
    seed_dir, content, info = seeded(tmp, 8 * CHUNK + 3, info_beside)
    seeder = await start(ca, tmp, nursery, n, mport, seed_dir)
    receiver = await start(ca, tmp, nursery, n + 1, mport)
    await wait_until(lambda: len(receiver.node.peers()) == 1, "discovery")
    return seeder, receiver, content, info


@pytest.mark.integration
async def test_a_seed_file_with_its_chunk_list_beside_it_is_served_while_it_is_copied(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seeder does not copy the whole file before it serves: with its copy held at
    chunk 3, the receiver already has chunks 0..2 from it."""
    import threading

    from vigo_swarm.blobstore import Partial

    seeder, receiver, content, info = await seeder_with_info_beside(tmp_path, nursery, 120)
    reached, go_on = threading.Event(), threading.Event()
    copy = Partial.copy_chunk_from

    def held_at_3(self: Partial, fd: int, index: int) -> bool:
        if index == 3:
            reached.set()
            go_on.wait(timeout=60)
        return copy(self, fd, index)

    monkeypatch.setattr(Partial, "copy_chunk_from", held_at_3)
    await seeder.gossip.merge([record_for(info, "etc/motd")], "server")

    def has_three() -> bool:
        state = receiver.blobs.get(info.sha256)
        return (
            reached.is_set()
            and bool(state and state.progress)
            and (
                state.progress.have_chunks >= 3  # type: ignore[union-attr]
            )
        )

    try:
        await wait_until(has_three, "chunks 0..2 at the receiver while the copy waits")
        assert seeder.store.blob_path(info.sha256) is None  # still copying
    finally:
        go_on.set()
    link = receiver.files_root / "etc" / "motd"
    await wait_until(lambda: link.is_symlink() and link.exists(), "the file at the receiver")
    assert link.resolve().read_bytes() == content
    assert seeder.store.blob_path(info.sha256) is not None


@pytest.mark.integration
async def test_a_seed_file_that_is_not_the_blob_its_chunk_list_describes_is_refused(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Chunk 2 of the seed file changed after its chunk list was written: the copy stops
    there with a warning; chunks 0 and 1 (verified) are kept, nothing is complete or
    materialized anywhere."""
    from vigo_swarm.blobstore import decode_bitmap

    seeder, receiver, _, info = await seeder_with_info_beside(tmp_path, nursery, 122)
    seed_file = seeder.seed_dirs[0] / info.sha256
    data = bytearray(seed_file.read_bytes())
    data[2 * CHUNK + 5] ^= 0xFF
    seed_file.write_bytes(bytes(data))
    await seeder.gossip.merge([record_for(info, "etc/motd")], "server")
    await wait_until(
        lambda: any(
            "refused" in r.getMessage() and "chunk 2" in r.getMessage() for r in caplog.records
        ),
        "the refusal in the log",
    )
    assert seeder.store.blob_path(info.sha256) is None
    held = seeder.store.have(info.sha256)
    assert held is not None and decode_bitmap(held, info.num_chunks) == {0, 1}
    assert not (receiver.files_root / "etc" / "motd").exists()
    assert receiver.store.blob_path(info.sha256) is None


@pytest.mark.integration
async def test_a_malformed_chunk_list_beside_a_seed_file_is_ignored_and_the_file_hashed(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    seeder, receiver, content, info = await seeder_with_info_beside(
        tmp_path, nursery, 124, info_beside=b"{not json"
    )
    await seeder.gossip.merge([record_for(info, "etc/motd")], "server")
    link = receiver.files_root / "etc" / "motd"
    await wait_until(lambda: link.is_symlink() and link.exists(), "the file at the receiver")
    assert link.resolve().read_bytes() == content
