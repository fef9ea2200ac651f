"""Filling a filesystem, for disk-full tests (with the ``small_fs`` fixture)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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
