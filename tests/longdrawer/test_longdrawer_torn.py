"""A file that changes while it is being sent is never materialized torn: the
receiver only ever shows a whole version (every byte of one version), never a mix of
two. The sender overwrites the file in place, chunk by chunk, while the receiver is
fetching the previous version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from ld_helpers import pair, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SIZE = 24 << 20
PIECE = 1 << 20


def overwrite(path: Path, value: int) -> None:
    """Rewrite the file in place, one piece at a time (torn while it runs)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for at in range(0, SIZE, PIECE):
            os.pwrite(fd, bytes([value]) * PIECE, at)
    finally:
        os.close(fd)


def whole_version(path: Path) -> int | None:
    """The version the file shows, None if absent; fails on a torn file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    assert len(data) == SIZE, f"{path} has {len(data)} bytes"
    assert data.count(data[:1]) == SIZE, f"{path} is torn: it mixes versions"
    return data[0]


async def test_a_file_changing_while_sent_is_never_torn(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b = await pair(tmp_path, nursery, 61, 62)
    src, dst = a.folder() / "moving.bin", b.folder() / "moving.bin"
    (ps_b,) = b.svc.people.values()
    seen: set[int] = set()
    done = False

    async def watch_receiver() -> None:
        while not done:
            version = await trio.to_thread.run_sync(whole_version, dst)
            if version is not None:
                seen.add(version)
            await trio.sleep(0.01)

    nursery.start_soon(watch_receiver)
    src.write_bytes(bytes([1]) * SIZE)
    await wait_until(lambda: bool(ps_b.fetchers) or dst.exists(), "b fetching version 1")
    for value in range(2, 6):  # rewritten in place while b fetches and applies
        await trio.to_thread.run_sync(overwrite, src, value)
    await wait_until(lambda: 5 in seen, "b shows the last version", timeout_s=120)
    done = True
    assert seen <= {1, 2, 3, 4, 5}
    assert await trio.to_thread.run_sync(whole_version, dst) == 5
