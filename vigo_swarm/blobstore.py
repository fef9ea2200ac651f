"""The blob store: content-addressed, chunked, crash-safe storage of swarm blobs.

Layout under ``root`` (the envoy passes ``<state>/swarm``)::

    .blobs/<sha256>               a complete blob, verified whole, mode 0444
    .blobs/info/<sha256>          its BlobInfo (JSON: size, chunk size, chunk hashes)
    .blobs/partial/<sha256>/info  the BlobInfo of a blob being fetched
    .blobs/partial/<sha256>/data  a sparse file of the blob's size
    .blobs/partial/<sha256>/have  bitmap of verified chunks (chunk i = byte i//8, MSB first)
    .blobs/tmp/                   staging (add_file, new partials); emptied when opened

Invariants (blocking IO: the daemon calls this through ``trio.to_thread``; one
``BlobStore`` per root per process):

1. No path is built from a hash that ``check_sha256`` has not accepted (64 lowercase hex).
2. A chunk's bit is set in ``have`` only after its bytes matched its hash and length and
   were written to ``data``. Neither is fsynced per chunk (that was most of a fetch's
   time on a disk): ``kill -9`` loses nothing written, and after a machine crash a bit
   may outlive its bytes — so a partial found on disk is re-verified chunk by chunk
   before it is resumed (``begin``), and a claim that does not verify is dropped. A
   blob is fsynced whole before it becomes complete (3).
3. ``.blobs/<sha256>`` appears only by renaming a file whose whole SHA-256 verified,
   after its info record is durable: nothing partial is ever visible there.
4. A rejected chunk writes nothing; a failed write (ENOSPC) marks nothing and the
   partial stays resumable. A new partial appears whole (built in ``tmp``, renamed), not
   fsynced: after a machine crash it may be gone or damaged, and ``begin`` starts afresh.
5. A blob has one chunking here, the one it was first stored with (``info()``); chunks
   are served from complete blobs and from partials begun in this process, and are
   checked against their hash before they leave.

Exceptions (the first four, with ``BlobInfo`` and the bitmaps, live in ``blobmeta``
and are re-exported here)::

    BlobError
     ├── InvalidHash      not 64 lowercase hex (also ValueError); nothing was touched
     ├── InvalidBlobInfo  inconsistent sizes or chunk list, a malformed bitmap (ValueError)
     ├── BlobNotFound     no such blob or chunk here, or the partial was deleted
     ├── ChunkMismatch    a chunk's bytes do not match its hash or length; nothing written
     ├── BlobMismatch     every chunk verified but the whole blob did not: discarded
     ├── IncompleteBlob   complete() while chunks are missing
     └── StoreError       the filesystem failed (the message says what we were doing)
          └── StoreFull   no space left (ENOSPC, EDQUOT)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .blobmeta import (
    MAX_CHUNK_BYTES,
    READ_BYTES,
    BlobError,
    BlobInfo,
    BlobNotFound,
    Hasher,
    InvalidBlobInfo,
    InvalidHash,
    check_sha256,
    decode_bitmap,
    describe_bytes,
    describe_file,
    encode_bitmap,
    is_sha256,
)
from .durable import (
    NOFOLLOW,
    SequentialWriter,
    copy_hashing,
    fsync_dir,
    start_writeback,
    write_all,
    write_direct,
    write_new,
)

_NOFOLLOW = NOFOLLOW

__all__ = [  # the blob's description lives in blobmeta; importers may take it from here
    "MAX_CHUNK_BYTES",
    "READ_BYTES",
    "BlobError",
    "BlobInfo",
    "BlobMismatch",
    "BlobNotFound",
    "BlobStore",
    "ChunkMismatch",
    "IncompleteBlob",
    "InvalidBlobInfo",
    "InvalidHash",
    "Partial",
    "StoreError",
    "StoreFull",
    "check_sha256",
    "decode_bitmap",
    "describe_bytes",
    "describe_file",
    "encode_bitmap",
    "is_sha256",
]


class ChunkMismatch(BlobError):
    """A chunk does not match its hash or length."""


class BlobMismatch(BlobError):
    """The whole blob does not match its hash."""


class IncompleteBlob(BlobError):
    """complete() was called with chunks missing."""


class StoreError(BlobError):
    """The filesystem failed."""


class StoreFull(StoreError):
    """No space left on the store's filesystem; ``doing`` says what we were doing."""

    def __init__(self, message: str, doing: str = "") -> None:
        super().__init__(message)
        self.doing = doing


INFO_SUFFIX = ".info.json"  # a seed file's chunk list beside it (the server lite writes one)
MAX_INFO_BYTES = 64 << 20


def read_info_beside(path: str | os.PathLike[str]) -> BlobInfo | None:
    """The BlobInfo JSON written beside a file (``<path>.info.json``), or None if there
    is none, or it is too large or malformed. Blocking. Whoever uses it still checks it
    against what it trusts (a signed record) and every chunk against its hash."""
    try:
        fd = os.open(os.fspath(path) + INFO_SUFFIX, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_INFO_BYTES + 1)
    if len(raw) > MAX_INFO_BYTES:
        return None
    try:
        return BlobInfo.from_json(raw)
    except BlobError:
        return None


class Partial:
    """A blob being fetched; get it from ``BlobStore.begin``. Thread-safe."""

    def __init__(self, store: BlobStore, info: BlobInfo, have: bytearray, done: bool) -> None:
        self.info, self._store, self._have, self._done = info, store, have, done
        self._dead, self._lock = False, threading.Lock()
        sha = check_sha256(info.sha256)  # validated before any path is built
        self._dir = os.path.join(store._partials_dir, sha)
        # the whole-blob hash, carried along the prefix of chunks held (see _hash_along)
        self._whole, self._hashed, self._hash_lock = hashlib.sha256(), 0, threading.Lock()

    def _has(self, index: int) -> bool:
        return bool(self._have[index >> 3] & (0x80 >> (index & 7)))

    def missing(self) -> list[int]:
        return [i for i in range(self.info.num_chunks) if not self._has(i)]

    def have_bitmap(self) -> bytes:
        return bytes(self._have)

    def write_chunk(self, index: int, data: bytes | memoryview) -> bool:
        """Verify and store chunk ``index``; True if it was new. Raises ChunkMismatch."""
        info, short = self.info, self.info.sha256[:12]
        if len(data) != (size := info.chunk_size(index)):
            raise ChunkMismatch(f"chunk {index} of blob {short}: {len(data)} bytes, not {size}")
        if hashlib.sha256(data).digest() != info.chunk_hashes[index]:
            raise ChunkMismatch(f"chunk {index} of blob {short}: SHA-256 does not match")
        if self._dead:
            raise BlobNotFound(f"blob {short} was deleted; begin it again")
        if self._has(index):
            return False
        with _io(f"writing chunk {index} of blob {short} under {self._store.root}"):
            path, offset = os.path.join(self._dir, "data"), index * info.chunk_bytes
            if not (self._store.direct_io and write_direct(path, data, offset)):
                _pwrite(path, data, offset)
            with self._lock:
                if self._has(index):
                    return False
                # The data is written before its bit; begin() re-verifies after a crash.
                byte = self._have[index >> 3] | (0x80 >> (index & 7))
                _pwrite(os.path.join(self._dir, "have"), bytes([byte]), index >> 3, sync=False)
                self._have[index >> 3] = byte
            self._hash_along(index, data)
        return True

    def copy_chunk_from(self, fd: int, index: int) -> bool:
        """``write_chunk`` of chunk ``index`` read from ``fd``, a file holding the whole
        blob (a seed file); True if it was new. ChunkMismatch if the file's bytes there
        are not the chunk."""
        size = self.info.chunk_size(index)
        with _io(f"reading chunk {index} of blob {self.info.sha256[:12]} from its seed file"):
            data = os.pread(fd, size, index * self.info.chunk_bytes)
        return self.write_chunk(index, data)

    def _hash_along(self, index: int, data: bytes | memoryview) -> None:
        """Carry the whole-blob hash over the chunks now held in order from the start.

        Chunks that come in order (a single source sends them so) are hashed here while
        still in memory, so ``complete`` has little left to read; if another thread is
        already at it, that one carries on (``complete`` catches up whatever is left).
        """
        if not self._hash_lock.acquire(blocking=False):
            return
        try:
            self._hash_prefix(index, data)
        finally:
            self._hash_lock.release()

    def _hash_prefix(self, index: int = -1, data: bytes | memoryview = b"") -> None:
        """Extend the whole-blob hash over held chunks; ``_hash_lock`` held. Chunk
        ``index`` is ``data``; others are read back (they verified before their bit)."""
        info, fd = self.info, -1
        try:
            while self._hashed < info.num_chunks and self._has(self._hashed):
                i, chunk = self._hashed, memoryview(data)
                if i != index:
                    if fd < 0:
                        fd = os.open(os.path.join(self._dir, "data"), os.O_RDONLY | _NOFOLLOW)
                    chunk = memoryview(os.pread(fd, info.chunk_size(i), i * info.chunk_bytes))
                self._whole.update(chunk)
                self._hashed += 1
        finally:
            if fd >= 0:
                os.close(fd)

    def complete(self) -> Path:
        """Verify the whole blob and move it to ``.blobs/<sha256>``; returns that path."""
        info, store, short = self.info, self._store, self.info.sha256[:12]
        final = store._complete_path(info.sha256)
        with self._lock, _io(f"completing blob {short} under {store.root}"):
            if self._dead:
                raise BlobNotFound(f"blob {short} was deleted; begin it again")
            if self._done or os.path.isfile(final):  # done, or seeded meanwhile
                self._done = True
                with store._lock:
                    store._remove_partial(info.sha256)
                return Path(final)
            if missing := self.missing():
                raise IncompleteBlob(f"blob {short}: {len(missing)} chunks still missing")
            data = os.path.join(self._dir, "data")
            with self._hash_lock:
                self._hash_prefix()
                digest = self._whole.copy()
            fd = os.open(data, os.O_RDONLY | _NOFOLLOW)
            try:
                if digest.hexdigest() != info.sha256:
                    self._dead = True
                    store.delete(info.sha256)
                    raise BlobMismatch(
                        f"blob {short}: every chunk verified but the whole blob hashes to "
                        f"{digest.hexdigest()[:12]}: its chunk list is wrong; discarded"
                    )
                os.fchmod(fd, 0o444)
                os.fsync(fd)
            finally:
                os.close(fd)
            with store._lock:  # lock order: a Partial's lock, then the store's
                if self._dead:
                    raise BlobNotFound(f"blob {short} was deleted while completing")
                store._write_info(info)
                os.rename(data, final)
                fsync_dir(store._blobs)
                self._done = True
                store._remove_partial(info.sha256)
        return Path(final)


class BlobStore:
    """Complete and partial blobs under ``<root>/.blobs`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, direct_io: bool = True) -> None:
        self.root = Path(root)
        # chunks that arrive in aligned buffers are written past the page cache (docs/blobs.md)
        self.direct_io = direct_io
        self._blobs = os.path.join(self.root, ".blobs")
        self._info_dir = os.path.join(self._blobs, "info")
        self._partials_dir = os.path.join(self._blobs, "partial")
        self._tmp = os.path.join(self._blobs, "tmp")
        self._lock = threading.RLock()
        self._partials: dict[str, Partial] = {}
        self._infos: dict[str, BlobInfo] = {}  # of complete blobs
        with _io(f"opening the blob store at {self.root}"):
            os.makedirs(self.root, mode=0o755, exist_ok=True)
            for d in (self._blobs, self._info_dir, self._partials_dir, self._tmp):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d, 0o755)
                if os.path.islink(d) or not os.path.isdir(d):
                    raise StoreError(f"{d} is not a directory (a symlink?); refusing to use it")
            for name in os.listdir(self._tmp):
                _remove(os.path.join(self._tmp, name))

    def _complete_path(self, sha256: str) -> str:
        sha = check_sha256(sha256)  # validated before any path is built
        return os.path.join(self._blobs, sha)

    def add_file(
        self, path: str | os.PathLike[str], chunk_bytes: int, *, expect: BlobInfo | None = None
    ) -> BlobInfo:
        """Copy a local file into the store (seeding), hashing what is copied.

        With ``expect``, the copy must match it exactly, else BlobMismatch and nothing is
        stored. A blob already complete here is kept as it is (same bytes by hash).
        """
        with _io(f"adding {path} to the blob store at {self.root}"), open(path, "rb") as src:
            return self._add_stream(src, str(path), chunk_bytes, expect)

    def add_bytes(
        self, data: bytes, chunk_bytes: int, *, expect: BlobInfo | None = None
    ) -> BlobInfo:
        """``add_file`` for bytes already in memory (a small blob received whole)."""
        with _io(f"adding a blob to the blob store at {self.root}"):
            return self._add_stream(io.BytesIO(data), "the bytes", chunk_bytes, expect)

    def _add_stream(
        self, src: io.BufferedIOBase, what: str, chunk_bytes: int, expect: BlobInfo | None
    ) -> BlobInfo:
        hasher = Hasher(chunk_bytes)
        tmp = os.path.join(self._tmp, f"add-{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o444)
            try:
                out = SequentialWriter(fd, direct=self.direct_io)
                copy_hashing(src.readinto, out, hasher.whole.update, hasher.update_chunks)
                os.fsync(fd)
            finally:
                os.close(fd)
            info = hasher.info()
            if expect is not None and info != expect:
                raise BlobMismatch(f"{what} is blob {info.sha256[:12]}, not the one expected")
            if self.blob_path(info.sha256) is None:
                # The fsyncs stay outside the lock, so that adds in parallel threads share
                # the journal's commits; the info record is durable before the blob shows.
                self._write_info(info)
                with self._lock:
                    moved = self.blob_path(info.sha256) is None
                    if moved:
                        if not os.path.exists(os.path.join(self._info_dir, info.sha256)):
                            self._write_info(info)  # a gc() between took it: again
                        os.rename(tmp, self._complete_path(info.sha256))
                if moved:
                    fsync_dir(self._blobs)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return self.info(info.sha256) or info

    def begin(self, info: BlobInfo) -> Partial:
        """The Partial for ``info``: the one in progress (resumed from disk) or a new one.

        A partial on disk with another chunk list, or damaged, is discarded. For a blob
        already complete the Partial misses nothing and ``complete()`` returns its path.
        """
        sha, n = check_sha256(info.sha256), info.num_chunks
        with self._lock, _io(f"starting blob {sha[:12]} under {self.root}"):
            if self.blob_path(sha) is not None:
                return Partial(self, info, bytearray(encode_bitmap(range(n), n)), done=True)
            if (open_ := self._partials.get(sha)) is not None:
                if open_.info == info:
                    return open_
                open_._dead = True  # another chunk list replaces it below
            have = self._load_partial(info)
            if have is None:
                self._create_partial(info)
                have = bytearray((n + 7) // 8)
            partial = self._partials[sha] = Partial(self, info, have, done=False)
            return partial

    def _load_partial(self, info: BlobInfo) -> bytearray | None:
        sha = check_sha256(info.sha256)
        pdir = os.path.join(self._partials_dir, sha)
        try:
            with open(os.path.join(pdir, "info"), "rb") as f:
                stored = BlobInfo.from_json(f.read())
            with open(os.path.join(pdir, "have"), "rb") as f:
                have = bytearray(f.read())
            decode_bitmap(bytes(have), stored.num_chunks)
            if stored == info and os.lstat(os.path.join(pdir, "data")).st_size == info.size_bytes:
                return _verified_claims(pdir, info, have)
        except (FileNotFoundError, NotADirectoryError, InvalidBlobInfo):
            pass
        _remove(pdir)  # absent, damaged, or another chunk list: start afresh
        return None

    def _create_partial(self, info: BlobInfo) -> None:
        """A new partial, built in ``tmp`` and renamed into place whole. Nothing is
        fsynced (five fsyncs took 35-120 ms at a fetch's start on a busy disk): after a
        machine crash the partial may be gone or damaged, and ``_load_partial`` then
        starts afresh; what it does find is re-verified (invariant 2)."""
        stage = os.path.join(self._tmp, f"partial-{secrets.token_hex(8)}")
        try:
            os.mkdir(stage, 0o700)
            write_new(os.path.join(stage, "info"), info.to_json(), 0o600, sync=False)
            have = bytes((info.num_chunks + 7) // 8)
            write_new(os.path.join(stage, "have"), have, 0o600, sync=False)
            fd = os.open(os.path.join(stage, "data"), os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, info.size_bytes)  # sparse: space is taken chunk by chunk
            finally:
                os.close(fd)
            os.rename(stage, os.path.join(self._partials_dir, info.sha256))
        finally:
            _remove(stage)

    def blob_path(self, sha256: str) -> Path | None:
        """The path of a complete blob, else None."""
        path = self._complete_path(sha256)
        return Path(path) if os.path.isfile(path) and not os.path.islink(path) else None

    def info(self, sha256: str) -> BlobInfo | None:
        """The info of a complete blob, or of a partial begun in this process, else None."""
        sha = check_sha256(sha256)
        with self._lock:
            if sha not in self._infos and (partial := self._partials.get(sha)) is not None:
                return partial.info
            if sha not in self._infos and self.blob_path(sha) is not None:
                with (
                    _io(f"reading the info of blob {sha[:12]} under {self.root}"),
                    open(os.path.join(self._info_dir, sha), "rb") as f,
                ):
                    self._infos[sha] = BlobInfo.from_json(f.read())
            return self._infos.get(sha)

    def have_cached(self, sha256: str) -> bytes | None:
        """``have`` without IO: None unless the blob's info is already in memory (then
        the event loop may call it directly; else call ``have`` in a thread)."""
        sha = check_sha256(sha256)
        with self._lock:
            if (partial := self._partials.get(sha)) is not None:
                return partial.have_bitmap()
            if (info := self._infos.get(sha)) is not None:
                return encode_bitmap(range(info.num_chunks), info.num_chunks)
        return None

    def have(self, sha256: str) -> bytes | None:
        """The bitmap of the chunks this store can serve for a blob (peers advertise it)."""
        if (info := self.info(sha256)) is None:
            return None
        with self._lock:
            if (partial := self._partials.get(info.sha256)) is not None:
                return partial.have_bitmap()
            return encode_bitmap(range(info.num_chunks), info.num_chunks)

    def read_chunk(self, sha256: str, index: int) -> bytes:
        """Chunk ``index`` of a complete blob, or a verified chunk of a partial one."""
        short = check_sha256(sha256)[:12]
        if (info := self.info(sha256)) is None:
            raise BlobNotFound(f"blob {short} is not here")
        size, offset = info.chunk_size(index), index * info.chunk_bytes
        paths = [self._complete_path(sha256)]
        if (partial := self._partials.get(sha256)) is not None and partial._has(index):
            paths.insert(0, os.path.join(partial._dir, "data"))
        with _io(f"reading chunk {index} of blob {short} under {self.root}"):
            for path in paths:  # a partial may complete (be renamed) under our feet
                try:
                    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
                except FileNotFoundError:
                    continue
                try:
                    data = os.pread(fd, size, offset)
                finally:
                    os.close(fd)
                if len(data) == size and hashlib.sha256(data).digest() == info.chunk_hashes[index]:
                    return data
        raise BlobNotFound(f"chunk {index} of blob {short} is not verified here")

    def delete(self, sha256: str) -> bool:
        """Remove a blob, complete or partial, and its info. True if anything was there."""
        sha = check_sha256(sha256)
        with self._lock, _io(f"deleting blob {sha[:12]} under {self.root}"):
            if (partial := self._partials.get(sha)) is not None:
                partial._dead = True
            self._infos.pop(sha, None)
            paths = (self._complete_path(sha), os.path.join(self._info_dir, sha))
            found = [p for p in paths if os.path.lexists(p)]
            for path in found:
                os.unlink(path)
            return self._remove_partial(sha) or bool(found)

    def _remove_partial(self, sha: str) -> bool:
        self._partials.pop(sha, None)
        check_sha256(sha)
        pdir = os.path.join(self._partials_dir, sha)
        if not os.path.lexists(pdir):
            return False
        _remove(pdir)
        fsync_dir(self._partials_dir)
        return True

    def gc(self, referenced: Iterable[str], pinned: Iterable[str]) -> list[str]:
        """Delete every blob, complete or partial, neither referenced nor pinned.

        Returns the hashes removed; symlinks to them are the caller's to remove first.
        """
        keep = set(referenced) | set(pinned)
        with self._lock, _io(f"collecting garbage under {self.root}"):
            found: set[str] = set()
            for d in (self._blobs, self._info_dir, self._partials_dir):
                found.update(n for n in os.listdir(d) if is_sha256(n))
            doomed = sorted(found - keep)
            for sha in doomed:
                self.delete(sha)
        return doomed

    def _write_info(self, info: BlobInfo) -> None:
        tmp = os.path.join(self._tmp, f"info-{secrets.token_hex(8)}")
        try:
            write_new(tmp, info.to_json(), 0o444)
            os.rename(tmp, os.path.join(self._info_dir, info.sha256))  # BlobInfo checked it
            fsync_dir(self._info_dir)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def _io(what: str) -> Iterator[None]:
    """Turn OSError into StoreError / StoreFull, naming what we were doing."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull(
                f"no space left while {what}: nothing was marked or made visible; "
                "free disk space and retry (verified chunks are kept)",
                what,
            ) from exc
        raise StoreError(f"{what}: {exc.strerror or exc}") from exc


def _pwrite(path: str, data: bytes | memoryview, offset: int, *, sync: bool = True) -> None:
    """Write ``data`` at ``offset``; ``sync``: and start writing it to disk now (not
    waiting: the fsync before the blob completes then has little left to do)."""
    fd = os.open(path, os.O_WRONLY | _NOFOLLOW)
    try:
        write_all(fd, memoryview(data), offset)
        if sync:
            start_writeback(fd, offset, len(data))
    finally:
        os.close(fd)


def _verified_claims(pdir: str, info: BlobInfo, have: bytearray) -> bytearray:
    """``have`` without the chunks whose bytes in ``data`` do not match their hash (a
    bit that outlived its data in a machine crash); the bitmap file is fixed to match."""
    checked = bytearray(len(have))
    with open(os.path.join(pdir, "data"), "rb", opener=_nofollow_opener) as f:
        for i in decode_bitmap(bytes(have), info.num_chunks):
            f.seek(i * info.chunk_bytes)
            if hashlib.sha256(f.read(info.chunk_size(i))).digest() == info.chunk_hashes[i]:
                checked[i >> 3] |= 0x80 >> (i & 7)
    if checked != have:
        with open(os.path.join(pdir, "have"), "r+b", opener=_nofollow_opener) as f:
            f.write(checked)
    return checked


def _nofollow_opener(path: str, flags: int) -> int:
    return os.open(path, flags | _NOFOLLOW)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
