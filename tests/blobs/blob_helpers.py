"""Helpers shared by the blob tests (data files, filling a filesystem)."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

CHUNK = 64 * 1024


def make_source(directory: Path, size: int, seed: int = 0, name: str = "src") -> Path:
    """A file of ``size`` pseudo-random bytes (deterministic per seed)."""
    path = directory / f"{name}-{seed}-{size}"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def fill(path: Path) -> Path:
    """Write ``path`` until its filesystem is full (ENOSPC); returns it."""
    block = b"\xff" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return path
