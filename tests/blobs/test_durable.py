"""Durable writes: every byte lands where it should, in bounded pieces."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from vigo_swarm import durable
from vigo_swarm.durable import (
    COPY_PIECE_BYTES,
    DIRECT_ALIGN,
    WRITE_PIECE_BYTES,
    SequentialWriter,
    aligned_buffer,
    copy_hashing,
    start_writeback,
    write_all,
    write_direct,
)


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


def test_write_direct_writes_aligned_buffers_and_declines_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(4 * DIRECT_ALIGN))
    buf = aligned_buffer(2 * DIRECT_ALIGN)
    buf[:] = os.urandom(len(buf))
    assert write_direct(path, buf, DIRECT_ALIGN)  # ext4 under /tmp has O_DIRECT
    assert path.read_bytes()[DIRECT_ALIGN : 3 * DIRECT_ALIGN] == bytes(buf)
    before = path.read_bytes()
    assert not write_direct(path, buf, 100)  # an unaligned offset
    assert not write_direct(path, buf[:100], 0)  # an unaligned length
    assert not write_direct(path, buf[0:0], 0)  # nothing to write
    odd = aligned_buffer(DIRECT_ALIGN + 1)[1:]  # aligned length, unaligned address
    assert not write_direct(path, odd, 0)
    assert path.read_bytes() == before  # a refusal wrote nothing


def test_sequential_writer_goes_direct_then_buffered_for_the_tail(tmp_path: Path) -> None:
    data = os.urandom(3 * DIRECT_ALIGN + 100)
    buf = aligned_buffer(len(data))
    buf[:] = data
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        out = SequentialWriter(fd, direct=True)
        assert out.direct  # ext4 under /tmp takes O_DIRECT
        out.write(buf[: 2 * DIRECT_ALIGN])
        assert out.direct
        out.write(buf[2 * DIRECT_ALIGN :])  # a tail that is not whole blocks
        assert not out.direct
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data


def test_sequential_writer_falls_back_on_an_unaligned_buffer(tmp_path: Path) -> None:
    data = os.urandom(2 * DIRECT_ALIGN)
    odd = aligned_buffer(len(data) + 1)[1:]  # whole blocks, but not at a page boundary
    odd[:] = data
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        out = SequentialWriter(fd, direct=True)
        out.write(odd)  # EINVAL from the kernel: written the ordinary way instead
        assert not out.direct
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.parametrize("size", [0, 100, COPY_PIECE_BYTES, 2 * COPY_PIECE_BYTES + 4097])
def test_copy_hashing_copies_and_hashes_every_byte_in_order(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = io.BytesIO(data)
    first, second = hashlib.sha256(), hashlib.sha256()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        copy_hashing(src.readinto, SequentialWriter(fd, direct=True), first.update, second.update)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == data
    assert first.digest() == second.digest() == hashlib.sha256(data).digest()
