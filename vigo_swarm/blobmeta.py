"""What a blob is, apart from where it is stored: its hash, size, chunking and chunk
hashes (``BlobInfo``), the have-bitmap peers advertise, and describing bytes or a file
(one streaming pass for the whole-blob hash and the chunk hashes). Pure but for
``describe_file`` reading its file; ``blobstore`` stores blobs and re-exports these.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeGuard

READ_BYTES = 1 << 20
MAX_CHUNK_BYTES = 16 << 20  # the manifest's limit too
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BlobError(Exception):
    """Base of every error the blob store raises."""


class InvalidHash(BlobError, ValueError):
    """A blob hash is not 64 lowercase hex digits."""


class InvalidBlobInfo(BlobError, ValueError):
    """A BlobInfo or bitmap is inconsistent."""


class BlobNotFound(BlobError):
    """No such blob or chunk here."""


def is_sha256(value: object) -> TypeGuard[str]:
    """True for a blob hash: 64 lowercase hex digits (checked before any path is built)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def check_sha256(value: object) -> str:
    """Return ``value`` if it is a blob hash (64 lowercase hex), else raise InvalidHash."""
    if not is_sha256(value):
        raise InvalidHash(f"not a blob hash (64 lowercase hex digits): {value!r:.80}")
    return value


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a blob is: its hash, its size, and the SHA-256 of each ``chunk_bytes`` chunk."""

    sha256: str
    size_bytes: int
    chunk_bytes: int
    chunk_hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_sha256(self.sha256)
        _check_chunk_bytes(self.chunk_bytes)
        if not _is_int(self.size_bytes) or self.size_bytes < 0:
            raise InvalidBlobInfo(f"size_bytes must be an integer >= 0, got {self.size_bytes!r}")
        expected = -(-self.size_bytes // self.chunk_bytes)
        if len(self.chunk_hashes) != expected:
            raise InvalidBlobInfo(
                f"{self.size_bytes} bytes in {self.chunk_bytes}-byte chunks is {expected} "
                f"chunks, but the chunk list has {len(self.chunk_hashes)}"
            )
        if not all(isinstance(h, bytes) and len(h) == 32 for h in self.chunk_hashes):
            raise InvalidBlobInfo("every chunk hash must be 32 bytes")
        if expected == 1 and self.chunk_hashes[0].hex() != self.sha256:
            raise InvalidBlobInfo("a one-chunk blob's chunk hash must equal its hash")

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_hashes)

    @property
    def chunks_digest(self) -> str:
        """SHA-256 (hex) over the concatenated raw chunk hashes, as the manifest carries."""
        return hashlib.sha256(b"".join(self.chunk_hashes)).hexdigest()

    def chunk_size(self, index: int) -> int:
        """The exact length of chunk ``index`` (the last one may be shorter)."""
        if not 0 <= index < self.num_chunks:
            raise BlobNotFound(f"blob {self.sha256[:12]} has no chunk {index}")
        return min(self.chunk_bytes, self.size_bytes - index * self.chunk_bytes)

    def to_json(self) -> bytes:
        hashes = [h.hex() for h in self.chunk_hashes]
        obj = {"sha256": self.sha256, "size_bytes": self.size_bytes}
        return json.dumps({**obj, "chunk_bytes": self.chunk_bytes, "chunk_hashes": hashes}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BlobInfo:
        try:
            obj = json.loads(raw)
            hashes = tuple(bytes.fromhex(h) for h in obj["chunk_hashes"])
            return cls(obj["sha256"], obj["size_bytes"], obj["chunk_bytes"], hashes)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidBlobInfo(f"malformed blob info: {exc}") from exc


def encode_bitmap(indices: Iterable[int], num_chunks: int) -> bytes:
    """Bit i (byte i//8, most significant bit first) is set for each index."""
    out = bytearray((num_chunks + 7) // 8)
    for i in indices:
        if not 0 <= i < num_chunks:
            raise InvalidBlobInfo(f"chunk index {i} out of range for {num_chunks} chunks")
        out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def decode_bitmap(bitmap: bytes, num_chunks: int) -> set[int]:
    """The indices set in a bitmap (a peer's advert): refuses a wrong length or stray bits."""
    if len(bitmap) != (num_chunks + 7) // 8:
        raise InvalidBlobInfo(f"bitmap of {len(bitmap)} bytes for {num_chunks} chunks")
    found = {i for i in range(len(bitmap) * 8) if bitmap[i >> 3] & (0x80 >> (i & 7))}
    if found and max(found) >= num_chunks:
        raise InvalidBlobInfo("bitmap has bits set past the last chunk")
    return found


def describe_file(path: str | os.PathLike[str], chunk_bytes: int) -> BlobInfo:
    """Hash a local file (streaming, 1 MiB reads) into its BlobInfo."""
    hasher, buf = Hasher(chunk_bytes), bytearray(READ_BYTES)
    with open(path, "rb") as src:
        while n := src.readinto(buf):
            hasher.update(memoryview(buf)[:n])
    return hasher.info()


def describe_bytes(data: bytes | memoryview, chunk_bytes: int) -> BlobInfo:
    """The BlobInfo of bytes in memory (``describe_file`` for a small file read whole)."""
    hasher = Hasher(chunk_bytes)
    hasher.update(memoryview(data))
    return hasher.info()


class Hasher:
    """The whole-blob hash and the chunk hashes of a stream, in one pass."""

    def __init__(self, chunk_bytes: int) -> None:
        _check_chunk_bytes(chunk_bytes)
        self.chunk_bytes, self.in_chunk, self.size = chunk_bytes, 0, 0
        self.whole, self.chunk = hashlib.sha256(), hashlib.sha256()
        self.hashes: list[bytes] = []

    def update(self, data: memoryview) -> None:
        self.whole.update(data)
        self.update_chunks(data)

    def update_chunks(self, data: memoryview) -> None:
        """The chunk hashes (and size) only: ``whole`` is updated apart (another thread)."""
        self.size += len(data)
        while data:
            take = min(len(data), self.chunk_bytes - self.in_chunk)
            self.chunk.update(data[:take])
            self.in_chunk, data = self.in_chunk + take, data[take:]
            if self.in_chunk == self.chunk_bytes:
                self.hashes.append(self.chunk.digest())
                self.chunk, self.in_chunk = hashlib.sha256(), 0

    def info(self) -> BlobInfo:
        tail = [self.chunk.digest()] if self.in_chunk else []
        return BlobInfo(self.whole.hexdigest(), self.size, self.chunk_bytes, (*self.hashes, *tail))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_chunk_bytes(value: object) -> None:
    if not (
        isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_CHUNK_BYTES
    ):
        raise InvalidBlobInfo(f"chunk_bytes must be 1..{MAX_CHUNK_BYTES}, got {value!r}")
