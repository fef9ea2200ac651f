"""Durable writes: every byte lands where it should, in bounded pieces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigo_swarm import durable
from vigo_swarm.durable import WRITE_PIECE_BYTES, start_writeback, write_all


@pytest.mark.parametrize("offset", [None, 0, 12345])
def test_write_all_writes_everything_in_bounded_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int | None
) -> None:
    data = os.urandom(3 * WRITE_PIECE_BYTES + 17)
    sizes: list[int] = []
    real_write, real_pwrite = os.write, os.pwrite

    def short_write(fd: int, buf: memoryview) -> int:  # the kernel may write less
        sizes.append(len(buf))
        return real_write(fd, buf[: max(1, len(buf) // 2)])

    def short_pwrite(fd: int, buf: memoryview, at: int) -> int:
        sizes.append(len(buf))
        return real_pwrite(fd, buf[: max(1, len(buf) // 2)], at)

    monkeypatch.setattr(os, "write", short_write)
    monkeypatch.setattr(os, "pwrite", short_pwrite)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        write_all(fd, memoryview(data), offset)
    finally:
        os.close(fd)
    assert max(sizes) <= WRITE_PIECE_BYTES
    assert path.read_bytes()[offset or 0 :] == data


def test_start_writeback_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1 << 16))
    fd = os.open(path, os.O_RDWR)
    try:
        start_writeback(fd, 0, 1 << 16)
    finally:
        os.close(fd)
    start_writeback(fd, 0, 1 << 16)  # a closed descriptor: the fsync that follows reports it
    assert durable._sync_file_range is not None  # Linux: the call is really made
