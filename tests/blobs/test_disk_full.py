"""Disk full on a real (tiny, 2 MiB tmpfs) filesystem: a clear StoreFull, nothing marked,
nothing visible, the chunks kept are intact, and the transfer completes by resuming once
space is freed. Also filecast's report of it and its wait for space (``diskfull``)."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from blob_helpers import CHUNK, fill, make_source

from vigo_swarm import diskfull
from vigo_swarm.blobstore import BlobStore, StoreError, StoreFull, decode_bitmap, describe_file


def visible_blobs(root: Path) -> list[str]:
    return [n for n in os.listdir(root / ".blobs") if len(n) == 64]


def test_disk_full_during_chunk_writes_then_resume(small_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path, 16 * CHUNK + 99)  # ~1 MiB, outside the small filesystem
    data, info = src.read_bytes(), describe_file(src, CHUNK)
    root = small_fs / "swarm"
    store = BlobStore(root)
    partial = store.begin(info)
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
    assert caught.value.doing == f"writing chunk 4 of blob {info.sha256[:12]} under {root}"
    report = diskfull.assess(store, info, caught.value)  # as filecast does
    assert report.kept_chunks == 4 and report.total_chunks == info.num_chunks
    assert report.needed_bytes == info.size_bytes - 4 * CHUNK
    assert report.free_bytes < CHUNK and not report.quota
    reopened = BlobStore(root)  # the kept chunks are intact (read_chunk re-verifies)
    reopened.begin(info)
    for i in range(4):
        assert reopened.read_chunk(info.sha256, i) == data[i * CHUNK : (i + 1) * CHUNK]

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


# ------------------------------------------------------------ filecast's report and wait

REPORT = diskfull.DiskFull(
    root=Path("/var/lib/vigo/swarm"),
    sha256="ab" * 32,
    needed_bytes=13 << 20,
    free_bytes=512 << 10,
    kept_chunks=11,
    total_chunks=24,
    chunk_bytes=1 << 20,
    quota=False,
    doing="writing chunk 11 of blob abababababab under /var/lib/vigo/swarm",
)


def test_report_says_what_is_full_how_much_and_that_it_retries() -> None:
    assert REPORT.message() == (
        "/var/lib/vigo/swarm is full: blob abababababab needs 13.0 MiB more, 0.5 MiB free "
        "(failed while writing chunk 11 of blob abababababab under /var/lib/vigo/swarm); "
        "11 of 24 chunks are verified and kept; retrying as soon as space is freed"
    )
    quota = replace(REPORT, quota=True).message()
    assert quota.startswith("disk quota exceeded under /var/lib/vigo/swarm: blob")


def test_space_is_back_when_the_rest_fits_or_one_more_chunk_does() -> None:
    assert not diskfull.space_is_back(REPORT, REPORT.free_bytes)
    assert not diskfull.space_is_back(REPORT, REPORT.free_bytes + REPORT.chunk_bytes - 1)
    assert diskfull.space_is_back(REPORT, REPORT.free_bytes + REPORT.chunk_bytes)
    small = replace(REPORT, needed_bytes=100, free_bytes=0)
    assert diskfull.space_is_back(small, 100) and not diskfull.space_is_back(small, 99)


def test_first_leaf_digs_through_nested_nursery_groups() -> None:
    full = StoreFull("no space left while x", "x")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [full])])
    assert diskfull.first_leaf(nested) is full


async def test_wait_for_space_returns_once_space_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    free = iter([0, 0, REPORT.free_bytes + REPORT.chunk_bytes])
    calls: list[Path] = []

    async def fake_free(path: Path) -> int:
        calls.append(path)
        return next(free)

    start = trio.current_time()
    await diskfull.wait_for_space(REPORT, poll_s=1.0, max_wait_s=60.0, free=fake_free)
    assert trio.current_time() - start == 3.0  # three polls, MockClock (autojump)
    assert calls == [REPORT.root] * 3


async def test_wait_for_space_gives_up_waiting_after_max_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never(path: Path) -> int:  # statvfs failing (or a quota it cannot see)
        raise OSError(errno.EIO, "I/O error")

    start = trio.current_time()
    await diskfull.wait_for_space(REPORT, poll_s=1.0, max_wait_s=10.0, free=never)
    assert trio.current_time() - start == 10.0


def test_assess_counts_nothing_kept_when_the_partial_could_not_start(
    small_fs: Path, tmp_path: Path
) -> None:
    src = make_source(tmp_path, 4 * CHUNK)
    info = describe_file(src, CHUNK)
    store = BlobStore(small_fs / "swarm")
    fill(small_fs / "filler")
    with pytest.raises(StoreFull) as caught:
        store.begin(info)
    report = diskfull.assess(store, info, caught.value)
    assert report.kept_chunks == 0 and report.needed_bytes == info.size_bytes
    assert isinstance(caught.value, StoreError) and "starting blob" in report.doing
