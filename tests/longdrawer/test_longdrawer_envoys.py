"""Two and three longdrawer envoys on loopback: real multicast, real mTLS peer channel,
real SQLite, real watchfiles. The person is root (the test's uid) under a per-envoy
home root, so no user needs to be created; tests/netlab covers a real user."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import trio
from ld_helpers import listing, start_envoy, tree_digest, wait_until

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

    (fb / "hello.txt").unlink()
    (fb / "empty").rmdir()
    await wait_until(lambda: not (fa / "hello.txt").exists() and same(), "delete from b")
    assert not (fa / "empty").exists()
