"""Issue 4 (lockbox) on netlab, with the real CLI and daemons: alice's puddle on A, B, C
(init on A, pair+join B and C) and E (joined, left locked); D in the fleet, not the
puddle. A file written on A appears decrypted and identical on B and C; E holds the same
ciphertext and shows the plaintext only after unlock; D's requests are refused; the
Debian ``age`` CLI decrypts the ciphertext with the exported identity; no plaintext name
or content appears in any envoy's state, the server's data dir, or any log; a delete and
a rename propagate, and an edit made on C while it was down, concurrent with one on A,
keeps both versions everywhere."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from netlab.fleet import Fleet, console_script
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root, pytest.mark.timeout(600)]

PASS = "alice's lockbox passphrase\n"
NAME = "taxes/zebra-quokka-return.txt"  # unusual words: grep finds only real leaks
CONTENT = b"zanzibar-marmalade plaintext " * 40_000  # ~1.1 MiB: several chunks

PROBE = r"""
import json, sys, trio
from vigo_swarm import http11, pki
state, host, sha, puddle = sys.argv[1:5]
async def main():
    ctx = pki.client_context(f"{state}/identity/ca.pem", cert_file=f"{state}/identity/cert.pem",
                             key_file=f"{state}/identity/key.pem")
    out = []
    async with await http11.connect(host, 1531, ctx) as conn:
        for path in (f"/swarm/v1/blobs/{sha}/info", f"/swarm/v1/blobs/{sha}/chunks/0"):
            out.append((await conn.request("GET", path)).status)
        for path, body in (("/swarm/v1/lockbox/sync", {"puddle": puddle, "ids": []}),
                           ("/swarm/v1/lockbox/push", {"puddle": puddle, "records": []})):
            out.append((await conn.request("POST", path, body=json.dumps(body).encode())).status)
    print(json.dumps(out))
trio.run(main)
"""


def puddle(fleet: Fleet, host: object, *argv: str, stdin: str | None = None) -> str:
    h = fleet.lab.host(host)  # type: ignore[arg-type]
    full = [str(console_script("vigo")), "swarm", "puddle", *argv, "--state-dir", str(h.state_dir)]
    return fleet.lab.exec(h, full, input_text=stdin, timeout_s=60).stdout


def status(fleet: Fleet, host: object) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(puddle(fleet, host, "status", "--json"))
    return out


def box(fleet: Fleet, host: object) -> Path:
    return fleet.lab.host(host).state_dir / "home" / "root" / "lockbox"  # type: ignore[arg-type]


def blobs(fleet: Fleet, host: object) -> dict[str, bytes]:
    d = fleet.lab.host(host).state_dir / "swarm" / "lockbox" / ".blobs"  # type: ignore[arg-type]
    if not d.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and len(p.name) == 64}


def listing(root: Path) -> dict[str, bytes]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_lockbox_across_a_puddle(fleet_factory: FleetFactory, tmp_path: Path) -> None:
    fleet = fleet_factory(
        5,
        agent_config={
            "checkin_interval_s": 2,
            "log_level": "debug",
            "lockbox_rescan_s": 1,
            "lockbox_sync_interval_s": 1,
        },
    )
    fleet.enroll_all()
    a, b, c, d, e = fleet.lab.envoys
    for h in fleet.lab.envoys:
        fleet.start_envoy(h, {"home_root": str(h.state_dir / "home")})
    fleet.wait_until_confirmed(timeout_s=60)

    puddle(fleet, a, "init", "--passphrase-fd", "0", stdin=PASS)
    for joiner in (b, c, e):
        code = json.loads(puddle(fleet, a, "pair", "--json"))["code"]
        puddle(fleet, joiner, "join", a.name, code, "--json")
    for h in (b, c):
        puddle(fleet, h, "unlock", "--passphrase-fd", "0", stdin=PASS)
    want = sorted(fleet.uuid(h) for h in (a, b, c, e))
    fleet.wait_for(
        lambda: all(
            sorted(m["uuid"] for m in status(fleet, h)["members"]) == want for h in (a, b, c, e)
        ),
        60,
        "A, B, C and E to show the same 4-member list",
    )
    fleet.wait_for(lambda: box(fleet, a).is_dir(), 30, "~/lockbox on A")

    # a file written on A appears decrypted and identical on B and C
    target = box(fleet, a) / NAME
    target.parent.mkdir()
    target.write_bytes(CONTENT)
    os.chmod(target, 0o600)
    for h in (b, c):
        fleet.wait_for(
            lambda h=h: listing(box(fleet, h)) == {NAME: CONTENT}, 60, f"{NAME} on {h.name}"
        )
        assert (box(fleet, h) / NAME).stat().st_mode & 0o777 == 0o600
    # E (locked) holds the same ciphertext, byte for byte; D holds none
    fleet.wait_for(lambda: len(blobs(fleet, e)) == 1, 60, "the ciphertext on E")
    held = [blobs(fleet, h) for h in (a, b, c, e)]
    assert all(x == held[0] for x in held) and len(held[0]) == 1
    ((sha, ciphertext),) = held[0].items()
    assert blobs(fleet, d) == {} and listing(box(fleet, e)) == {}
    st_e = status(fleet, e)
    assert st_e["state"] == "locked" and st_e["lockbox"]["pending_writes"] == 1

    # D's requests for alice's lockbox data are refused
    probe = fleet.lab.exec(
        d,
        [sys.executable, "-c", PROBE, str(d.state_dir), a.address, sha, st_e["puddle"]],
        timeout_s=60,
    )
    assert json.loads(probe.stdout) == [403, 403, 403, 403]

    # the Debian age CLI decrypts it with the exported identity
    ident = tmp_path / "alice.key"
    puddle(
        fleet,
        b,
        "export-identity",
        "--format",
        "openssh",
        "--output",
        str(ident),
        "--passphrase-fd",
        "0",
        stdin=PASS,
    )
    (tmp_path / "blob.age").write_bytes(ciphertext)
    age = fleet.lab.exec(b, ["age", "-d", "-i", str(ident), str(tmp_path / "blob.age")])
    assert age.stdout.encode() == CONTENT
    ident.unlink()

    # E shows the plaintext only after unlock
    puddle(fleet, e, "unlock", "--passphrase-fd", "0", stdin=PASS)
    fleet.wait_for(lambda: listing(box(fleet, e)) == {NAME: CONTENT}, 60, f"{NAME} on E")

    # delete and rename on B propagate
    (box(fleet, a) / "gone.txt").write_bytes(b"short-lived")
    (box(fleet, a) / "old.txt").write_bytes(b"moving")
    fleet.wait_for(lambda: len(listing(box(fleet, b))) == 3, 60, "three files on B")
    (box(fleet, b) / "gone.txt").unlink()
    (box(fleet, b) / "old.txt").rename(box(fleet, b) / "new.txt")
    after = {NAME: CONTENT, "new.txt": b"moving"}
    for h in (a, c, e):
        fleet.wait_for(
            lambda h=h: listing(box(fleet, h)) == after, 60, f"delete+rename on {h.name}"
        )

    # C goes down; A and C both edit new.txt; C comes back: both versions kept
    fleet.stop_envoy(c)
    (box(fleet, a) / "new.txt").write_bytes(b"edited on A")
    fleet.wait_for(
        lambda: listing(box(fleet, b)).get("new.txt") == b"edited on A", 60, "A's edit on B"
    )
    (box(fleet, c) / "new.txt").write_bytes(b"edited on C, later")
    fleet.start_envoy(c, {"home_root": str(c.state_dir / "home")})
    fleet.wait_ready([c])
    puddle(fleet, c, "unlock", "--passphrase-fd", "0", stdin=PASS)

    def both_kept(h: object) -> bool:
        files = listing(box(fleet, h))
        copies = [v for k, v in files.items() if k.startswith("new.sync-conflict-")]
        return files.get("new.txt") == b"edited on C, later" and copies == [b"edited on A"]

    for h in (a, b, c, e):
        fleet.wait_for(lambda h=h: both_kept(h), 90, f"both versions on {h.name}")
    assert len({json.dumps(sorted(listing(box(fleet, h)))) for h in (a, b, c, e)}) == 1

    # no plaintext name or content anywhere but the people's own lockboxes
    needles = [b"zebra-quokka", b"zanzibar-marmalade", b"edited on A", b"gone.txt", b"old.txt"]
    places: list[Path] = [fleet.data_dir, *(h.log_file for h in fleet.lab.hosts)]
    for h in fleet.lab.envoys:
        places += [p for p in h.state_dir.iterdir() if p.name != "home"]
    scanned = 0
    for place in places:
        for p in [place] if place.is_file() else place.rglob("*"):
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                scanned += 1
                for needle in needles:
                    assert needle not in data, f"{needle!r} in {p}"
    assert scanned > 20
    logs = "".join(h.log_file.read_text(errors="replace") for h in fleet.lab.envoys)
    assert "new records" in logs  # the logs did record lockbox work (debug level)
