"""Small files are indexed without a copy in the store and served from the folder,
only while the disk still holds the indexed bytes (folder.py, invariant 5)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vigo_swarm.blobstore import BlobStore
from vigo_swarm.longdrawer.folder import Folder, Person
from vigo_swarm.longdrawer.paths import IgnoreRules

CHUNK = 1 << 20
ENVOY = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    person = Person("p", os.getuid(), os.getgid(), tmp_path / "home", "pid")
    person.root.mkdir(parents=True)
    return Folder(person, ENVOY, BlobStore(tmp_path / "store"), CHUNK)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_small_file_is_indexed_without_a_copy_and_a_large_one_with(folder: Folder) -> None:
    small, large = os.urandom(4096), os.urandom(CHUNK + 1)
    (folder.person.root / "small.bin").write_bytes(small)
    (folder.person.root / "large.bin").write_bytes(large)
    result = folder.scan({}, IgnoreRules())
    entries = {e.path: e for e, _ in result.changed}
    assert entries["small.bin"].sha256 == sha(small) and entries["small.bin"].size == 4096
    assert entries["large.bin"].sha256 == sha(large)
    assert folder.store.blob_path(sha(small)) is None  # hashed only
    assert folder.store.blob_path(sha(large)) is not None  # an immutable snapshot


def test_read_indexed_serves_only_the_indexed_bytes(folder: Folder, tmp_path: Path) -> None:
    root = folder.person.root
    (root / "d").mkdir()
    data = os.urandom(3000)
    (root / "d" / "f.bin").write_bytes(data)
    assert folder.read_indexed("d/f.bin", sha(data), len(data)) == data
    assert folder.read_indexed("d/f.bin", sha(data), len(data) - 1) is None  # size differs
    changed = bytes([data[0] ^ 1]) + data[1:]
    (root / "d" / "f.bin").write_bytes(changed)  # edited since indexed, same size
    assert folder.read_indexed("d/f.bin", sha(data), len(data)) is None
    assert folder.read_indexed("d/missing.bin", sha(data), len(data)) is None
    assert folder.read_indexed("../escape", sha(data), len(data)) is None  # a bad path

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.bin").write_bytes(data)  # the indexed bytes, but outside the folder
    (root / "d" / "f.bin").unlink()
    (root / "d" / "f.bin").symlink_to(outside / "f.bin")
    assert folder.read_indexed("d/f.bin", sha(data), len(data)) is None  # never followed
    os.rename(root / "d", root / "d.old")
    (root / "d").symlink_to(outside)  # the directory swapped for a link
    assert folder.read_indexed("d/f.bin", sha(data), len(data)) is None


def test_read_indexed_refuses_a_file_someone_else_owns(folder: Folder) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give the file away")
    data = os.urandom(100)
    path = folder.person.root / "theirs.bin"
    path.write_bytes(data)
    os.chown(path, 54321, 54321)
    assert folder.read_indexed("theirs.bin", sha(data), len(data)) is None


def test_large_files_get_larger_chunks(folder: Folder) -> None:
    mib = 1 << 20
    assert folder.chunk_bytes_for(0) == folder.chunk_bytes_for(10 * mib) == CHUNK
    assert folder.chunk_bytes_for(100 * mib) == 2 * mib
    assert folder.chunk_bytes_for(256 * mib) == folder.chunk_bytes_for(64 << 30) == 4 * mib
    big = os.urandom(64 * mib + 1)  # just over: 2 MiB chunks
    (folder.person.root / "big.bin").write_bytes(big)
    (entry, _), *_ = folder.scan({}, IgnoreRules()).changed
    assert entry.chunk_bytes == 2 * mib and entry.size == len(big)
    assert folder.store.blob_path(entry.sha256) is not None
