"""The blob store: chunked, verified, crash-safe, never builds a path from a bad hash."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from blob_helpers import CHUNK, make_source
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm import blobstore
from vigo_swarm.blobstore import (
    BlobInfo,
    BlobMismatch,
    BlobNotFound,
    BlobStore,
    ChunkMismatch,
    IncompleteBlob,
    InvalidBlobInfo,
    InvalidHash,
    decode_bitmap,
    describe_file,
    encode_bitmap,
)

REPO = Path(__file__).resolve().parents[2]


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def on_disk_have(store: BlobStore, info: BlobInfo) -> set[int]:
    raw = (store.root / ".blobs" / "partial" / info.sha256 / "have").read_bytes()
    return decode_bitmap(raw, info.num_chunks)


# ------------------------------------------------------------------ describing


@given(data=st.binary(max_size=3000), chunk=st.integers(1, 700))
def test_describe_matches_a_naive_chunking(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, chunk: int
) -> None:
    path = tmp_path_factory.mktemp("d") / "f"
    path.write_bytes(data)
    info = describe_file(path, chunk)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)
    assert info.chunk_hashes == tuple(hashlib.sha256(c).digest() for c in chunks_of(data, chunk))
    assert info.chunks_digest == hashlib.sha256(b"".join(info.chunk_hashes)).hexdigest()
    assert BlobInfo.from_json(info.to_json()) == info


@given(
    st.integers(0, 70).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0))))
    )
)
def test_bitmap_roundtrip(case: tuple[int, set[int]]) -> None:
    n, indices = case
    indices = {i for i in indices if i < n}
    assert decode_bitmap(encode_bitmap(indices, n), n) == indices


def test_bitmap_from_a_peer_is_checked() -> None:
    with pytest.raises(InvalidBlobInfo, match="bytes for"):
        decode_bitmap(b"\x00\x00", 3)
    with pytest.raises(InvalidBlobInfo, match="past the last chunk"):
        decode_bitmap(b"\x10", 3)  # bit 3 of a 3-chunk blob


def test_inconsistent_infos_are_refused() -> None:
    h = hashlib.sha256(b"x").digest()
    with pytest.raises(InvalidBlobInfo, match="chunk list has"):
        BlobInfo("a" * 64, 10, 4, (h, h))
    with pytest.raises(InvalidBlobInfo, match="32 bytes"):
        BlobInfo("a" * 64, 8, 4, (h, b"short"))
    with pytest.raises(InvalidBlobInfo, match="one-chunk"):
        BlobInfo("a" * 64, 1, 4, (h,))
    with pytest.raises(InvalidBlobInfo, match="chunk_bytes"):
        BlobInfo("a" * 64, 0, 0, ())
    with pytest.raises(InvalidHash):
        BlobInfo("A" * 64, 0, 4, ())


# ------------------------------------------------------------------ seeding


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 17])
def test_add_file_roundtrip(store: BlobStore, tmp_path: Path, size: int) -> None:
    src = make_source(tmp_path, size, seed=size)
    info = store.add_file(src, CHUNK)
    assert info == describe_file(src, CHUNK)
    path = store.blob_path(info.sha256)
    assert path is not None and path.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.info(info.sha256) == info
    assert store.have(info.sha256) == encode_bitmap(range(info.num_chunks), info.num_chunks)
    data = src.read_bytes()
    for i, chunk in enumerate(chunks_of(data, CHUNK)):
        assert store.read_chunk(info.sha256, i) == chunk
    assert os.listdir(store.root / ".blobs" / "tmp") == []
    assert store.add_file(src, CHUNK) == info  # again: a no-op


def test_add_file_with_a_wrong_expectation_stores_nothing(
    store: BlobStore, tmp_path: Path, source: tuple[Path, BlobInfo]
) -> None:
    other = make_source(tmp_path, 100, seed=7)
    with pytest.raises(BlobMismatch, match="not the one expected"):
        store.add_file(other, CHUNK, expect=source[1])
    assert store.blob_path(describe_file(other, CHUNK).sha256) is None
    assert os.listdir(store.root / ".blobs" / "tmp") == []


# ------------------------------------------------------------------ fetching


def test_chunks_assemble_out_of_order(store: BlobStore, source: tuple[Path, BlobInfo]) -> None:
    src, info = source
    chunks = chunks_of(src.read_bytes(), CHUNK)
    partial = store.begin(info)
    assert store.begin(info) is partial  # idempotent
    order = list(range(info.num_chunks))
    random.Random(3).shuffle(order)
    for n, i in enumerate(order):
        assert store.blob_path(info.sha256) is None  # nothing partial is visible
        with pytest.raises(IncompleteBlob):
            partial.complete()
        assert partial.write_chunk(i, chunks[i])
        assert not partial.write_chunk(i, chunks[i])  # twice: nothing new
        assert len(partial.missing()) == info.num_chunks - n - 1
        assert on_disk_have(store, info) == set(order[: n + 1])
    path = partial.complete()
    assert path == store.blob_path(info.sha256)
    assert path.read_bytes() == src.read_bytes()
    assert not (store.root / ".blobs" / "partial" / info.sha256).exists()
    assert partial.complete() == path
    assert store.begin(info).missing() == []  # complete: nothing to fetch


def test_the_whole_hash_is_carried_along_chunks_that_come_in_order(
    store: BlobStore, source: tuple[Path, BlobInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, info = source
    chunks = chunks_of(src.read_bytes(), CHUNK)
    partial = store.begin(info)
    partial.write_chunk(1, chunks[1])  # ahead of the prefix: waits for chunk 0
    assert partial._hashed == 0
    partial.write_chunk(0, chunks[0])  # the prefix grows over 0 and the held 1
    assert partial._hashed == 2
    for i in range(2, info.num_chunks):
        partial.write_chunk(i, chunks[i])
    assert partial._hashed == info.num_chunks
    reads: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda *a: reads.append(1) or real_pread(*a))
    path = partial.complete()
    assert reads == []  # nothing read back: every chunk was hashed as it came
    assert path.read_bytes() == src.read_bytes()


def test_chunks_written_from_threads_are_all_marked(
    store: BlobStore, source: tuple[Path, BlobInfo]
) -> None:
    src, info = source
    chunks = chunks_of(src.read_bytes(), CHUNK)
    partial = store.begin(info)
    threads = [
        threading.Thread(target=partial.write_chunk, args=(i, chunks[i]))
        for i in range(info.num_chunks)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert on_disk_have(store, info) == set(range(info.num_chunks))
    assert BlobStore(store.root).begin(info).missing() == []


def test_a_wrong_chunk_is_refused_and_nothing_is_written(
    store: BlobStore, source: tuple[Path, BlobInfo]
) -> None:
    src, info = source
    chunks = chunks_of(src.read_bytes(), CHUNK)
    partial = store.begin(info)
    data_file = store.root / ".blobs" / "partial" / info.sha256 / "data"
    before = data_file.read_bytes()
    forged = bytes([chunks[2][0] ^ 1]) + chunks[2][1:]
    with pytest.raises(ChunkMismatch, match=r"chunk 2 .* SHA-256"):
        partial.write_chunk(2, forged)
    with pytest.raises(ChunkMismatch, match="bytes, not"):
        partial.write_chunk(2, chunks[2] + b"x")
    with pytest.raises(ChunkMismatch, match="bytes, not"):
        partial.write_chunk(info.num_chunks - 1, chunks[2])  # the last chunk is shorter
    with pytest.raises(BlobNotFound, match="no chunk"):
        partial.write_chunk(info.num_chunks, chunks[2])
    assert partial.missing() == list(range(info.num_chunks))
    assert on_disk_have(store, info) == set()
    assert data_file.read_bytes() == before  # still all zeros: nothing written


def test_whole_blob_mismatch_is_discarded(store: BlobStore, tmp_path: Path) -> None:
    """A forged record: its chunk list verifies chunk by chunk but not as a whole."""
    real = describe_file(make_source(tmp_path, 3 * CHUNK, seed=1), CHUNK)
    lie = BlobInfo(
        hashlib.sha256(b"something else").hexdigest(), 3 * CHUNK, CHUNK, real.chunk_hashes
    )
    data = (tmp_path / f"src-1-{3 * CHUNK}").read_bytes()
    partial = store.begin(lie)
    for i, chunk in enumerate(chunks_of(data, CHUNK)):
        partial.write_chunk(i, chunk)
    with pytest.raises(BlobMismatch, match="whole blob"):
        partial.complete()
    assert store.blob_path(lie.sha256) is None
    assert not (store.root / ".blobs" / lie.sha256).exists()
    assert not (store.root / ".blobs" / "partial" / lie.sha256).exists()
    with pytest.raises(BlobNotFound, match="begin it again"):
        partial.write_chunk(0, data[:CHUNK])


def test_a_new_chunk_list_for_the_same_blob_restarts_it(
    store: BlobStore, source: tuple[Path, BlobInfo]
) -> None:
    src, info = source
    data = src.read_bytes()
    old = store.begin(info)
    old.write_chunk(0, data[:CHUNK])
    other = describe_file(src, 2 * CHUNK)
    new = store.begin(other)
    assert new.missing() == list(range(other.num_chunks))
    with pytest.raises(BlobNotFound):
        old.write_chunk(1, data[CHUNK : 2 * CHUNK])
    for i, chunk in enumerate(chunks_of(data, 2 * CHUNK)):
        new.write_chunk(i, chunk)
    assert new.complete().read_bytes() == data


# ------------------------------------------------------------------ crashes

CRASHER = """
import os, signal, sys
from vigo_swarm import blobstore
from vigo_swarm.blobstore import BlobInfo, BlobStore

root, info_path, src_path, kill_at = sys.argv[1:]
info = BlobInfo.from_json(open(info_path, "rb").read())
data = open(src_path, "rb").read()
kill_at = int(kill_at)
real = blobstore._pwrite
armed = []

def pwrite_then_die(path, payload, offset, **kw):
    if armed and path.endswith("have"):
        os.kill(os.getpid(), signal.SIGKILL)  # data is written, its bit is not
    real(path, payload, offset, **kw)
    if path.endswith("data") and offset == kill_at * info.chunk_bytes:
        armed.append(True)

blobstore._pwrite = pwrite_then_die
store = BlobStore(root)
# every data write through _pwrite: a direct write (taken when the chunk's bytes happen
# to sit page-aligned in memory) would never arm the kill
store.direct_io = False
partial = store.begin(info)
for i in range(info.num_chunks):
    partial.write_chunk(i, data[i * info.chunk_bytes : (i + 1) * info.chunk_bytes])
"""


def test_kill_between_data_and_mark_loses_only_that_chunk(
    tmp_path: Path, source: tuple[Path, BlobInfo]
) -> None:
    src, info = source
    info_path = tmp_path / "info.json"
    info_path.write_bytes(info.to_json())
    root = tmp_path / "swarm"
    kill_at = 4
    done = subprocess.run(
        [sys.executable, "-c", CRASHER, str(root), str(info_path), str(src), str(kill_at)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    assert done.returncode == -9, done.stderr
    data = src.read_bytes()
    chunk = data[kill_at * CHUNK : (kill_at + 1) * CHUNK]
    on_disk = (root / ".blobs" / "partial" / info.sha256 / "data").read_bytes()
    assert on_disk[kill_at * CHUNK : (kill_at + 1) * CHUNK] == chunk  # written, not claimed

    store = BlobStore(root)  # the restart
    partial = store.begin(info)
    assert partial.missing() == list(range(kill_at, info.num_chunks))
    fetched = []
    for i in partial.missing():
        fetched.append(i)
        partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    assert kill_at in fetched and not set(fetched) & set(range(kill_at))
    assert partial.complete().read_bytes() == data


def test_a_bit_that_outlived_its_data_is_dropped_on_resume(
    tmp_path: Path, source: tuple[Path, BlobInfo]
) -> None:
    """A machine crash can persist a chunk's bit but not its bytes (nothing is fsynced
    per chunk): begin() re-verifies every claim and forgets the ones that fail."""
    src, info = source
    data = src.read_bytes()
    root = tmp_path / "swarm"
    partial = BlobStore(root).begin(info)
    for i in (0, 1, 2):
        partial.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    pdir = root / ".blobs" / "partial" / info.sha256
    with open(pdir / "data", "r+b") as f:  # chunk 1's bytes never reached the disk
        f.seek(1 * CHUNK)
        f.write(bytes(CHUNK))
    resumed = BlobStore(root).begin(info)  # a new process after the crash
    assert resumed.missing() == [1, *range(3, info.num_chunks)]
    assert (pdir / "have").read_bytes()[0] == 0b1010_0000  # the file agrees
    for i in resumed.missing():
        resumed.write_chunk(i, data[i * CHUNK : (i + 1) * CHUNK])
    assert resumed.complete().read_bytes() == data


def test_a_damaged_partial_starts_afresh(store: BlobStore, source: tuple[Path, BlobInfo]) -> None:
    src, info = source
    store.begin(info).write_chunk(0, src.read_bytes()[:CHUNK])
    (store.root / ".blobs" / "partial" / info.sha256 / "have").write_bytes(b"\xff")  # truncated
    assert BlobStore(store.root).begin(info).missing() == list(range(info.num_chunks))


# ------------------------------------------------------------------ serving


def test_read_chunk_serves_verified_chunks_only(
    store: BlobStore, source: tuple[Path, BlobInfo]
) -> None:
    src, info = source
    data = src.read_bytes()
    with pytest.raises(BlobNotFound, match="not here"):
        store.read_chunk(info.sha256, 0)
    assert store.have(info.sha256) is None
    partial = store.begin(info)
    partial.write_chunk(3, data[3 * CHUNK : 4 * CHUNK])
    assert store.read_chunk(info.sha256, 3) == data[3 * CHUNK : 4 * CHUNK]
    assert decode_bitmap(store.have(info.sha256) or b"", info.num_chunks) == {3}
    with pytest.raises(BlobNotFound, match="not verified"):
        store.read_chunk(info.sha256, 2)
    with pytest.raises(BlobNotFound, match="no chunk"):
        store.read_chunk(info.sha256, info.num_chunks)


def test_a_chunk_rotten_on_disk_is_not_served(
    store: BlobStore, source: tuple[Path, BlobInfo]
) -> None:
    src, info = source
    path = store.blob_path(store.add_file(src, CHUNK).sha256)
    assert path is not None
    with open(path, "r+b") as f:  # root ignores the 0444 mode
        f.seek(CHUNK + 5)
        f.write(b"\x00\x01")
    with pytest.raises(BlobNotFound, match="not verified"):
        store.read_chunk(info.sha256, 1)
    assert store.read_chunk(info.sha256, 0) == src.read_bytes()[:CHUNK]


# ------------------------------------------------------------------ retention


def test_gc_keeps_referenced_and_pinned(store: BlobStore, tmp_path: Path) -> None:
    infos = {}
    for name, seed in [("ref", 1), ("pin", 2), ("old", 3)]:
        infos[name] = store.add_file(make_source(tmp_path, 1000 + seed, seed=seed), CHUNK)
    wanted = describe_file(make_source(tmp_path, 2 * CHUNK, seed=4), CHUNK)
    stale = describe_file(make_source(tmp_path, 2 * CHUNK, seed=5), CHUNK)
    store.begin(wanted)
    store.begin(stale)
    (store.root / ".blobs" / "not-a-blob").write_text("left alone")
    removed = store.gc({infos["ref"].sha256, wanted.sha256}, {infos["pin"].sha256})
    assert removed == sorted([infos["old"].sha256, stale.sha256])
    blobs = store.root / ".blobs"
    assert store.blob_path(infos["ref"].sha256) and store.blob_path(infos["pin"].sha256)
    assert store.blob_path(infos["old"].sha256) is None
    assert not (blobs / "info" / infos["old"].sha256).exists()
    assert (blobs / "partial" / wanted.sha256).is_dir()
    assert not (blobs / "partial" / stale.sha256).exists()
    assert (blobs / "not-a-blob").exists()
    assert store.gc({infos["ref"].sha256, wanted.sha256}, {infos["pin"].sha256}) == []


def test_delete(store: BlobStore, source: tuple[Path, BlobInfo]) -> None:
    src, info = source
    store.add_file(src, CHUNK)
    assert store.delete(info.sha256)
    assert store.blob_path(info.sha256) is None and store.info(info.sha256) is None
    assert not store.delete(info.sha256)


BAD_HASHES = [
    "",
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    "../" * 21 + "a",
    "/etc/passwd",
    "a" * 63 + "\n",
    "a" * 32 + "\x00" + "a" * 31,
    "\u0660" * 64,  # Arabic-Indic zeros: str.isdigit() would take them
]


@contextmanager
def no_filesystem_access(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail on any use of ``os`` by the blob store module, and audit every open."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if active[0] and (event == "open" or event.startswith(("os.", "shutil."))):
            seen.append(event)

    class Tripwire:
        def __getattr__(self, name: str) -> object:
            seen.append(f"blobstore.os.{name}")
            raise AssertionError(f"filesystem touched: os.{name}")

    sys.addaudithook(hook)  # cannot be removed; `active` turns it off
    with monkeypatch.context() as patch:
        patch.setattr(blobstore, "os", Tripwire())
        try:
            yield seen
        finally:
            active[0] = False


@pytest.mark.parametrize("bad", BAD_HASHES)
def test_invalid_hashes_never_touch_the_filesystem(
    store: BlobStore, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.read_chunk(bad, 0),
        lambda: store.have(bad),
        lambda: store.info(bad),
        lambda: store.blob_path(bad),
        lambda: store.delete(bad),
        lambda: store.begin(BlobInfo(bad, 0, CHUNK, ())),
    ]
    with no_filesystem_access(monkeypatch) as seen:
        for call in calls:
            with pytest.raises(InvalidHash, match="64 lowercase hex"):
                call()
    assert seen == []


def test_a_chunk_list_beside_a_file_is_read_only_when_whole_and_well_formed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vigo_swarm.blobstore import describe_file, read_info_beside

    src = tmp_path / "blob"
    src.write_bytes(os.urandom(3 * CHUNK))
    info = describe_file(src, CHUNK)
    beside = tmp_path / "blob.info.json"
    assert read_info_beside(src) is None  # none there
    beside.write_bytes(info.to_json())
    assert read_info_beside(src) == info
    for bad in (b"", b"{not json", b'{"sha256": "x"}', b"[]"):
        beside.write_bytes(bad)
        assert read_info_beside(src) is None, bad
    beside.write_bytes(info.to_json())
    monkeypatch.setattr(blobstore, "MAX_INFO_BYTES", 100)  # too large: not read
    assert read_info_beside(src) is None


def test_copy_chunk_from_verifies_what_it_reads_from_the_file(tmp_path: Path) -> None:
    from vigo_swarm.blobstore import BlobStore, ChunkMismatch, describe_file

    src = tmp_path / "blob"
    data = bytearray(os.urandom(3 * CHUNK + 7))
    src.write_bytes(data)
    info = describe_file(src, CHUNK)
    data[CHUNK + 1] ^= 1
    src.write_bytes(data)  # chunk 1 is not the one described any more
    partial = BlobStore(tmp_path / "store").begin(info)
    fd = os.open(src, os.O_RDONLY)
    try:
        assert partial.copy_chunk_from(fd, 0) and partial.copy_chunk_from(fd, 3)
        assert not partial.copy_chunk_from(fd, 0)  # held already
        with pytest.raises(ChunkMismatch, match="chunk 1"):
            partial.copy_chunk_from(fd, 1)
    finally:
        os.close(fd)
    assert partial.missing() == [1, 2]
