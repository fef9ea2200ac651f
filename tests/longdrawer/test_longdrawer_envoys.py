"""Two and three longdrawer envoys on loopback: real multicast, real mTLS peer channel,
real SQLite, real watchfiles. The person is root (the test's uid) under a per-envoy
home root, so no user needs to be created; tests/netlab covers a real user."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import trio
from ld_helpers import listing, partnered, spawn, start_envoy, stop, tree_digest, wait_until

from vigo_server_lite.ca import FleetCA

pytestmark = pytest.mark.integration


@pytest.fixture
def mport() -> int:
    return 40000 + uuid.uuid4().int % 20000


async def test_changes_reach_the_other_envoy(
    tmp_path: Path, nursery: trio.Nursery, mport: int
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    a = await start_envoy(ca, tmp_path, nursery, 11, mport)
    b = await start_envoy(ca, tmp_path, nursery, 12, mport)
    fa, fb = a.folder(), b.folder()
    await wait_until(
        lambda: (
            all(len(ps.partners) == 1 for e in (a, b) for ps in e.svc.people.values())
            and len(a.svc.people) == 1
            and len(b.svc.people) == 1
        ),
        "partners",
    )

    def same() -> bool:
        return tree_digest(fa) == tree_digest(fb)

    (fa / "hello.txt").write_text("hello")
    (fa / "docs").mkdir()
    (fa / "docs" / "big.bin").write_bytes(os.urandom(300_000))
    (fa / "empty").mkdir()
    os.symlink("../hello.txt", fa / "docs" / "link")
    await wait_until(lambda: listing(fb) == listing(fa) and same(), "create")

    with open(fa / "hello.txt", "a") as f:
        f.write(" world")
    os.chmod(fa / "docs" / "big.bin", 0o600)
    await wait_until(lambda: (fb / "hello.txt").read_text() == "hello world" and same(), "modify")

    fetched = sum(ps.stats.bytes_fetched for ps in b.svc.people.values())
    os.rename(fa / "docs" / "big.bin", fa / "moved.bin")
    await wait_until(lambda: (fb / "moved.bin").exists() and same(), "rename")
    assert sum(ps.stats.bytes_fetched for ps in b.svc.people.values()) == fetched

    (fa / ".longdrawer-tmp-0123").write_text("left by a killed write")
    (fa / ".x.swp").write_text("editor")
    (fa / ".longdrawerignore").write_text("*.log\n")
    (fa / "debug.log").write_text("ignored")
    await wait_until(lambda: not (fa / ".longdrawer-tmp-0123").exists(), "stale temp removed")
    (fb / "hello.txt").unlink()
    (fb / "empty").rmdir()
    await wait_until(lambda: not (fa / "hello.txt").exists(), "delete from b")
    assert not (fa / "empty").exists()
    assert not (fb / ".x.swp").exists() and not (fb / "debug.log").exists()
    assert not (fb / ".longdrawerignore").exists()


async def test_edits_while_apart_keep_both_versions_and_delete_vs_edit_keeps_the_edit(
    tmp_path: Path, nursery: trio.Nursery, mport: int
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    a = await spawn(ca, tmp_path, nursery, 21, mport)
    b = await spawn(ca, tmp_path, nursery, 22, mport)
    fa, fb = a.folder(), b.folder()
    await wait_until(lambda: partnered(a, b), "partners")
    (fa / "doc.txt").write_text("base")
    (fa / "keep.txt").write_text("base")
    await wait_until(lambda: tree_digest(fa) == tree_digest(fb), "first sync")

    await stop(b)  # apart: b is down, both sides change the same files
    (fa / "doc.txt").write_text("edited on a")
    (fa / "keep.txt").write_text("edited on a")
    (fb / "doc.txt").write_text("edited on b, later")
    os.utime(fb / "doc.txt", ns=(time.time_ns() + 10**9,) * 2)
    (fb / "keep.txt").unlink()
    b = await spawn(ca, tmp_path, nursery, 22, mport, env=b.env)  # same state: restart
    await wait_until(lambda: partnered(a, b), "partners again")

    def healed() -> bool:
        return tree_digest(fa) == tree_digest(fb) and len(listing(fa)) == 3

    try:
        await wait_until(healed, "both versions on both envoys")
    except trio.TooSlowError:
        print("A", listing(fa), [(p, (fa / p).read_text()) for p in listing(fa)])
        print("B", listing(fb), [(p, (fb / p).read_text()) for p in listing(fb)])
        print(a.svc.status(None), b.svc.status(None))
        raise
    assert (fa / "doc.txt").read_text() == "edited on b, later"  # the later edit wins the name
    copies = [p for p in listing(fa) if ".sync-conflict-" in p]
    assert len(copies) == 1 and copies[0].startswith("doc.sync-conflict-")
    assert (fa / copies[0]).read_text() == "edited on a"
    assert (fb / "keep.txt").read_text() == "edited on a"  # delete vs edit: the edit stays
