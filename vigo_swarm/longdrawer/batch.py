"""Small files in one answer (pure): the body of ``POST /longdrawer/v1/<id>/small``.

A file of at most ``SMALL_BLOB_BYTES`` (one chunk) is fetched whole, many per request,
instead of by a swarm ``Fetcher`` each (a Fetcher costs TLS handshakes and round trips
per file: thousands of tiny files would take seconds). The request names up to
``MAX_SMALL_COUNT`` blob hashes; the answer is a sequence of records::

    sha256 (32 raw bytes) | length (4 bytes, big-endian) | the blob's bytes

at most ``MAX_SMALL_ANSWER_BYTES`` in all; blobs the server does not hold or serve are
left out. The receiver checks every record against what it asked for (the hash and
size its index entry names), and the blob store verifies the bytes' SHA-256 before
anything is kept: a peer cannot slip in a file nobody asked for or bytes that do not
match. A truncated or malformed answer is refused whole (``BadBatch``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

SMALL_BLOB_BYTES = 1 << 20
MAX_SMALL_COUNT = 1000
MAX_SMALL_ANSWER_BYTES = 8 << 20
_HEAD = struct.Struct(">32sI")


class BadBatch(ValueError):
    """A small-files answer is malformed (truncated, oversized, a length out of range)."""


def encode_small(records: Iterable[tuple[str, bytes]]) -> bytes:
    """``(sha256 hex, bytes)`` records → an answer body."""
    return b"".join(_HEAD.pack(bytes.fromhex(sha), len(data)) + data for sha, data in records)


def decode_small(body: bytes) -> list[tuple[str, bytes]]:
    """An answer body → ``(sha256 hex, bytes)`` records; BadBatch if it is malformed."""
    if len(body) > MAX_SMALL_ANSWER_BYTES + MAX_SMALL_COUNT * _HEAD.size:
        raise BadBatch(f"small-files answer of {len(body)} bytes is over the limit")
    out: list[tuple[str, bytes]] = []
    view, at = memoryview(body), 0
    while at < len(body):
        if len(out) >= MAX_SMALL_COUNT:
            raise BadBatch(f"small-files answer holds over {MAX_SMALL_COUNT} records")
        if at + _HEAD.size > len(body):
            raise BadBatch("small-files answer truncated inside a record header")
        raw, size = _HEAD.unpack_from(view, at)
        at += _HEAD.size
        if size > SMALL_BLOB_BYTES or at + size > len(body):
            raise BadBatch(f"small-files record of {size} bytes is truncated or too large")
        out.append((raw.hex(), bytes(view[at : at + size])))
        at += size
    return out


def plan_batches(sizes: dict[str, int]) -> list[list[str]]:
    """Hashes (with their sizes) → requests of at most MAX_SMALL_COUNT hashes and
    MAX_SMALL_ANSWER_BYTES of answer each, in the order given."""
    batches: list[list[str]] = []
    current: list[str] = []
    total = 0
    for sha, size in sizes.items():
        if current and (len(current) >= MAX_SMALL_COUNT or total + size > MAX_SMALL_ANSWER_BYTES):
            batches.append(current)
            current, total = [], 0
        current.append(sha)
        total += size
    if current:
        batches.append(current)
    return batches
