"""The server's seed directory: the originating copy of every blob it distributes.

Layout (``<data-dir>/seed/``, mode 0755)::

    <sha256>             the blob, mode 0444
    <sha256>.info.json   its ``BlobInfo.to_json()``: size, chunk size, chunk hashes (0444)
    .upload-<random>     an upload being written; removed when the server starts

Invariants (blocking IO: the API calls this through ``trio.to_thread``):

1. No path is built from a hash that is not 64 lowercase hex (``_check_hash``).
2. A blob or an info file appears only by ``rename`` of a file that was written and
   fsynced in this directory; the directory is fsynced after each rename. A crash
   leaves at most a stray ``.upload-*`` file, or a blob without its info (it is
   described again by the next upload of the same bytes); never a half-written blob.
3. ``<sha256>.info.json`` is written after ``<sha256>`` and is never changed: a blob
   has one chunking here. Uploading the same bytes with another ``chunk_bytes`` is
   refused (``ChunkingConflict``) rather than breaking records that use the first one.
4. A chunk leaves only after its bytes matched their hash in the info (``read_chunk``).

Exceptions::

    SeedError                 the filesystem failed (the message says what we did)
     ├── SeedFull             no space left (ENOSPC, EDQUOT); nothing became visible
     ├── SeedNotFound         no such blob or chunk (also for a malformed hash)
     ├── SeedCorrupt          a stored chunk does not match its hash (it is not served)
     └── ChunkingConflict     .existing — the blob is seeded with another chunk size
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from vigo_swarm.blobstore import INFO_SUFFIX, BlobInfo, describe_file, is_sha256
from vigo_swarm.durable import NOFOLLOW, fsync_dir, write_new

UPLOAD_PREFIX = ".upload-"
BLOB_MODE = 0o444
DIR_MODE = 0o755
_INFO_CACHE_ENTRIES = 256
_NOFOLLOW = NOFOLLOW


class SeedError(Exception):
    """The seed directory cannot do what was asked."""


class SeedFull(SeedError):
    pass


class SeedNotFound(SeedError):
    pass


class SeedCorrupt(SeedError):
    pass


class ChunkingConflict(SeedError):
    def __init__(self, existing: BlobInfo, wanted: int) -> None:
        self.existing = existing
        super().__init__(
            f"blob {existing.sha256} is already seeded in {existing.chunk_bytes}-byte chunks, "
            f"not {wanted}: omit chunk_bytes or pass {existing.chunk_bytes}"
        )


def _check_hash(value: str) -> str:
    if not is_sha256(value):
        raise SeedNotFound(f"not a blob hash (64 lowercase hex digits): {value[:80]!r}")
    return value


@contextlib.contextmanager
def _io(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SeedFull(f"no space left in the seed directory while {what}") from exc
        raise SeedError(f"seed directory: {what}: {exc.strerror or exc}") from exc


class SeedDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()  # one upload commits at a time (check, then write)
        self._infos: dict[str, BlobInfo] = {}

    def prepare(self) -> list[str]:
        """Create the directory; remove uploads a crash left behind (their names)."""
        with _io("creating it"):
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(DIR_MODE)
            stale = sorted(p.name for p in self.root.iterdir() if p.name.startswith(UPLOAD_PREFIX))
            for name in stale:
                (self.root / name).unlink()
        return stale

    def blob_path(self, sha256: str) -> Path:
        return self.root / _check_hash(sha256)

    def info_path(self, sha256: str) -> Path:
        return self.root / (_check_hash(sha256) + INFO_SUFFIX)

    # ------------------------------------------------------------------- writing

    def put(self, data: bytes, chunk_bytes: int | None, default_chunk_bytes: int) -> BlobInfo:
        """Seed ``data`` (see the invariants) and return its info. ``chunk_bytes=None``
        keeps an existing blob's chunking, else uses ``default_chunk_bytes``."""
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            existing = self.info(sha)
            if existing is not None:
                if chunk_bytes is not None and chunk_bytes != existing.chunk_bytes:
                    raise ChunkingConflict(existing, chunk_bytes)
                if self.blob_path(sha).is_file():
                    return existing
            wanted = existing.chunk_bytes if existing else (chunk_bytes or default_chunk_bytes)
            staged = self.root / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
            try:
                with _io("writing the upload"):
                    write_new(staged, data, 0o600)
                with _io("hashing the upload"):
                    info = describe_file(staged, wanted)
                if info.sha256 != sha:
                    raise SeedError("the upload changed on disk while it was being seeded")
                with _io("publishing the blob"):
                    os.chmod(staged, BLOB_MODE)
                    os.replace(staged, self.blob_path(sha))
                    fsync_dir(self.root)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()
            if existing is None:
                self._write_info(info)
            self._infos[sha] = existing or info
            return existing or info

    def _write_info(self, info: BlobInfo) -> None:
        staged = self.root / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        try:
            with _io("writing the blob info"):
                write_new(staged, info.to_json(), BLOB_MODE)
                os.replace(staged, self.info_path(info.sha256))
                fsync_dir(self.root)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()

    # ------------------------------------------------------------------- reading

    def info(self, sha256: str) -> BlobInfo | None:
        """The blob's info, or None when it is not seeded (or the hash is malformed)."""
        if not is_sha256(sha256):
            return None
        cached = self._infos.get(sha256)
        if cached is not None:
            return cached
        try:
            with _io("reading a blob info"):
                raw = self._read_small(self.info_path(sha256))
        except SeedNotFound:
            return None
        try:
            info = BlobInfo.from_json(raw)
        except ValueError as exc:
            raise SeedCorrupt(f"{self.info_path(sha256)} is not a valid blob info: {exc}") from exc
        if info.sha256 != sha256:
            raise SeedCorrupt(f"{self.info_path(sha256)} describes blob {info.sha256}")
        if len(self._infos) >= _INFO_CACHE_ENTRIES:
            self._infos.clear()
        self._infos[sha256] = info
        return info

    @staticmethod
    def _read_small(path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            raise SeedNotFound(f"{path.name} is not in the seed directory") from None
        with os.fdopen(fd, "rb") as f:
            return f.read(64 << 20)

    def info_bytes(self, sha256: str) -> bytes:
        """The info JSON exactly as ``BlobInfo.to_json`` writes it; SeedNotFound if absent."""
        info = self.info(sha256)
        if info is None or not self.blob_path(sha256).is_file():
            raise SeedNotFound(f"blob {sha256[:80]!r} is not seeded here")
        return info.to_json()

    def read_chunk(self, sha256: str, index: int) -> bytes:
        """Chunk ``index`` of a seeded blob, verified against its hash."""
        info = self.info(sha256)
        if info is None:
            raise SeedNotFound(f"blob {sha256[:80]!r} is not seeded here")
        if not 0 <= index < info.num_chunks:
            raise SeedNotFound(f"blob {sha256} has {info.num_chunks} chunks; no chunk {index}")
        size = info.chunk_size(index)
        try:
            fd = os.open(self.blob_path(sha256), os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            raise SeedNotFound(f"blob {sha256} is not seeded here") from None
        except OSError as exc:
            raise SeedError(f"seed directory: opening blob {sha256}: {exc.strerror}") from exc
        try:
            with _io(f"reading blob {sha256}"):
                data = os.pread(fd, size, index * info.chunk_bytes)
        finally:
            os.close(fd)
        if len(data) != size or hashlib.sha256(data).digest() != info.chunk_hashes[index]:
            raise SeedCorrupt(f"chunk {index} of seeded blob {sha256} does not match its hash")
        return data
