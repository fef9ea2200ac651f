"""Disk full on a real (tiny, 2 MiB tmpfs) filesystem: a clear StoreFull, nothing marked,
nothing visible, and the transfer completes by resuming once space is freed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from blob_helpers import CHUNK, fill, make_source

from vigo_swarm.blobstore import BlobStore, StoreFull, decode_bitmap, describe_file


def visible_blobs(root: Path) -> list[str]:
    return [n for n in os.listdir(root / ".blobs") if len(n) == 64]


def test_disk_full_during_chunk_writes_then_resume(small_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path, 16 * CHUNK + 99)  # ~1 MiB, outside the small filesystem
    data, info = src.read_bytes(), describe_file(src, CHUNK)
    root = small_fs / "swarm"
    partial = BlobStore(root).begin(info)
    for i in range(4):
        partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    filler = fill(small_fs / "filler")

    with pytest.raises(StoreFull) as caught:
        for i in range(4, info.num_chunks):
            partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    message = str(caught.value)
    assert "no space left while writing chunk" in message
    assert str(root) in message and "free disk space" in message
    assert partial.missing() == list(range(4, info.num_chunks))  # nothing marked
    have = (root / ".blobs" / "partial" / info.sha256 / "have").read_bytes()
    assert decode_bitmap(have, info.num_chunks) == {0, 1, 2, 3}
    assert visible_blobs(root) == []

    filler.unlink()
    resumed = BlobStore(root).begin(info)  # as after a daemon restart
    assert resumed.missing() == list(range(4, info.num_chunks))
    for i in resumed.missing():
        resumed.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    assert resumed.complete().read_bytes() == data
    assert visible_blobs(root) == [info.sha256]


def test_disk_full_at_completion_then_retry(small_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path, 8 * CHUNK)
    data, info = src.read_bytes(), describe_file(src, CHUNK)
    store = BlobStore(small_fs / "swarm")
    partial = store.begin(info)
    for i in range(info.num_chunks):
        partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    filler = fill(small_fs / "filler")
    with pytest.raises(StoreFull, match="no space left while completing blob"):
        partial.complete()
    assert store.blob_path(info.sha256) is None and visible_blobs(store.root) == []
    assert partial.missing() == []
    filler.unlink()
    assert partial.complete().read_bytes() == data


def test_disk_full_while_seeding_leaves_nothing(small_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path, 3 * 1024 * 1024)  # larger than the whole filesystem
    store = BlobStore(small_fs / "swarm")
    with pytest.raises(StoreFull, match="no space left while adding"):
        store.add_file(src, CHUNK)
    assert visible_blobs(store.root) == []
    assert os.listdir(store.root / ".blobs" / "tmp") == []
    assert os.listdir(store.root / ".blobs" / "info") == []


def test_disk_full_when_starting_a_blob(small_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path, 4 * CHUNK)
    info = describe_file(src, CHUNK)
    store = BlobStore(small_fs / "swarm")
    filler = fill(small_fs / "filler")
    with pytest.raises(StoreFull, match="no space left while starting blob"):
        store.begin(info)
    assert os.listdir(store.root / ".blobs" / "partial") == []
    assert os.listdir(store.root / ".blobs" / "tmp") == []
    filler.unlink()
    partial = store.begin(info)
    for i in partial.missing():
        partial.write_chunk(i, src.read_bytes()[i * CHUNK : (i + 1) * CHUNK])
    assert partial.complete().read_bytes() == src.read_bytes()
