"""Durable file writes shared by the blob store and the server's seed directory.

A file created here is complete and fsynced before anyone renames it into view; the
directory holding a rename is fsynced so the rename itself survives a crash. Paths are
opened with ``O_NOFOLLOW``: a symlink planted where we write is refused, never followed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
PathArg = str | os.PathLike[str]


# One write(2) never carries more than this. A 4 MiB write into fresh page cache lets
# the kernel take large folios, and on a VM whose free memory went back to the host
# (free page reporting) those come back up to ten times slower than small ones: 1 GiB
# in 4 MiB writes took 2.0-2.5 s here, in 256-512 KiB writes 0.2-0.5 s (warm: 0.21).
WRITE_PIECE_BYTES = 256 * 1024


def write_all(fd: int, data: memoryview, offset: int | None) -> None:
    """Write every byte (``os.write`` may write less), at ``offset`` if given."""
    while data:
        piece = data[:WRITE_PIECE_BYTES]
        n = os.write(fd, piece) if offset is None else os.pwrite(fd, piece, offset)
        data, offset = data[n:], None if offset is None else offset + n


def write_new(path: PathArg, data: bytes | memoryview, mode: int, *, sync: bool = True) -> None:
    """Create ``path`` (it must not exist), write ``data``, fsync (unless ``sync`` is off)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
    try:
        write_all(fd, memoryview(data), None)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathArg) -> None:
    """Make the renames and unlinks in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> object | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux/glibc: the final fsync does all the work
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Start writing ``nbytes`` at ``offset`` to disk and return at once (Linux
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``). Durability still comes from an fsync;
    this only spreads the disk work over a long write instead of leaving it all to that
    fsync. Errors are ignored here: the fsync reports them."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)  # type: ignore[operator]


DIRECT_ALIGN = 4096  # O_DIRECT: offsets, lengths and buffer addresses (any device's block)


def aligned_buffer(nbytes: int) -> memoryview:
    """A writable buffer at a page boundary (anonymous memory), as ``write_direct``
    needs; freed when the last view of it goes."""
    return memoryview(mmap.mmap(-1, max(nbytes, 1)))[:nbytes]


def write_direct(path: PathArg, data: bytes | memoryview, offset: int) -> bool:
    """Write ``data`` at ``offset`` past the page cache (``O_DIRECT``: straight from our
    buffer to the disk, no copy into cached pages and no writeback left for the fsync).

    Returns False, having written nothing, where that cannot be done: the filesystem
    has no ``O_DIRECT`` (tmpfs before Linux 6.6), or the offset, length or buffer
    address is not aligned to ``DIRECT_ALIGN`` (the caller then writes the usual way).
    A short direct write is finished with an ordinary one.
    """
    view = memoryview(data)
    if offset % DIRECT_ALIGN or len(view) % DIRECT_ALIGN or not view:
        return False
    fd = os.open(path, os.O_WRONLY | NOFOLLOW)
    try:
        if not _set_direct(fd, True):
            return False
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(fd, view[done:], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                if not done:
                    return False  # the buffer's address is not aligned
                _set_direct(fd, False)  # a short write left the rest unaligned
                write_all(fd, view[done:], offset + done)
                break
    finally:
        os.close(fd)
    return True


class SequentialWriter:
    """Writes appended to a new file, past the page cache while it can be.

    With ``direct``, ``O_DIRECT`` is switched on for the descriptor, and pieces that
    are whole multiples of ``DIRECT_ALIGN`` from a page-aligned buffer (``aligned_buffer``)
    go straight to the disk; the first piece that is not (a file's tail), or a
    filesystem that refuses, switches it off for good and the rest goes through the
    page cache. Either way every byte is written in order; the caller still fsyncs.
    """

    def __init__(self, fd: int, *, direct: bool) -> None:
        self.fd = fd
        self.direct = direct and _set_direct(fd, True)

    def write(self, data: memoryview) -> None:
        if self.direct and len(data) % DIRECT_ALIGN:
            self._buffered()
        while data:
            try:
                n = os.write(self.fd, data[:WRITE_PIECE_BYTES])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._buffered()  # an unaligned address, or a short write before
                continue
            data = data[n:]

    def _buffered(self) -> None:
        _set_direct(self.fd, False)
        self.direct = False


def _set_direct(fd: int, on: bool) -> bool:
    """Switch ``O_DIRECT`` on a descriptor; False where the filesystem refuses it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    return True


COPY_PIECE_BYTES = 4 << 20  # copy_hashing: read, hashed and written this much at a time


def copy_hashing(
    readinto: Callable[[memoryview], int],
    out: SequentialWriter,
    *updates: Callable[[memoryview], object],
) -> None:
    """Copy a stream (``readinto`` fills a buffer, 0 at its end) to ``out``, feeding
    every byte to each of ``updates`` (hashers) in order. A stream longer than one
    piece is written and hashed side by side — the first update in this thread, the
    write and the others in two more (hashlib and writes let go of the GIL) — so a
    large copy costs about one pass, not one per hash plus one for the write."""
    buf = aligned_buffer(COPY_PIECE_BYTES)
    n = readinto(buf)
    if n < len(buf):  # the whole stream in one piece: no threads for it
        for update in updates:
            update(buf[:n])
        out.write(buf[:n])
        return
    spare = aligned_buffer(COPY_PIECE_BYTES)
    first, *others = updates
    with ThreadPoolExecutor(1 + len(others), thread_name_prefix="copy") as pool:
        while n:
            piece = buf[:n]
            side: list[Future[object]] = [pool.submit(out.write, piece)]
            side += [pool.submit(update, piece) for update in others]
            first(piece)
            buf, spare = spare, buf
            n = readinto(buf)  # the next piece, while the last one is still written
            for done in side:
                done.result()
