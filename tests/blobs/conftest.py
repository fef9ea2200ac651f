"""Fixtures for the blob tests: a store and a source file (``small_fs``, a tiny tmpfs for
disk-full tests, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from blob_helpers import CHUNK, make_source

from vigo_swarm.blobstore import BlobInfo, BlobStore, describe_file


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "swarm")


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, BlobInfo]:
    """A file of ten chunks and a bit, outside the store, and its description."""
    path = make_source(tmp_path, 10 * CHUNK + 1234)
    return path, describe_file(path, CHUNK)
