"""Fixtures for the blob tests: a store, a source file, a tiny tmpfs for disk-full tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
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


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (root only), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full tests mount a 2 MiB tmpfs, which needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)
