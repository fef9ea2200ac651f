"""Helpers shared by the blob tests (data files; ``fill`` is in tests/disk_helpers.py)."""

from __future__ import annotations

import random
from pathlib import Path

from disk_helpers import fill

__all__ = ["CHUNK", "fill", "make_source"]

CHUNK = 64 * 1024


def make_source(directory: Path, size: int, seed: int = 0, name: str = "src") -> Path:
    """A file of ``size`` pseudo-random bytes (deterministic per seed)."""
    path = directory / f"{name}-{seed}-{size}"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path
