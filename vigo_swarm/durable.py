"""Durable file writes shared by the blob store and the server's seed directory.

A file created here is complete and fsynced before anyone renames it into view; the
directory holding a rename is fsynced so the rename itself survives a crash. Paths are
opened with ``O_NOFOLLOW``: a symlink planted where we write is refused, never followed.
"""

from __future__ import annotations

import os

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
PathArg = str | os.PathLike[str]


def write_all(fd: int, data: memoryview, offset: int | None) -> None:
    """Write every byte (``os.write`` may write less), at ``offset`` if given."""
    while data:
        n = os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
        data, offset = data[n:], None if offset is None else offset + n


def write_new(path: PathArg, data: bytes | memoryview, mode: int) -> None:
    """Create ``path`` (it must not exist), write ``data``, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
    try:
        write_all(fd, memoryview(data), None)
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
