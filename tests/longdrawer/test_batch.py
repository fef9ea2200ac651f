"""The /small answer codec and request planning (pure)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from vigo_swarm.longdrawer.batch import (
    MAX_SMALL_ANSWER_BYTES,
    MAX_SMALL_COUNT,
    SMALL_BLOB_BYTES,
    BadBatch,
    decode_small,
    encode_small,
    plan_batches,
)


def rec(data: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(data).hexdigest(), data


def test_round_trip() -> None:
    records = [rec(b""), rec(b"a"), rec(b"x" * 5000)]
    assert decode_small(encode_small(records)) == records
    assert decode_small(b"") == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (encode_small([rec(b"abc")])[:-1], "truncated"),
        (encode_small([rec(b"abc")])[:20], "header"),
        (b"\0" * 32 + struct.pack(">I", SMALL_BLOB_BYTES + 1), "too large"),
        (b"\0" * 32 + struct.pack(">I", 0xFFFFFFFF), "too large"),
    ],
)
def test_malformed_answers_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(BadBatch, match=why):
        decode_small(body)


def test_too_many_records_are_refused() -> None:
    body = encode_small([rec(b"")] * (MAX_SMALL_COUNT + 1))
    with pytest.raises(BadBatch, match="over"):
        decode_small(body)


def test_plans_respect_count_and_bytes() -> None:
    sizes = {f"{i:064x}": 4096 for i in range(2500)}
    batches = plan_batches(sizes)
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert [s for b in batches for s in b] == list(sizes)
    big = {f"{i:064x}": SMALL_BLOB_BYTES for i in range(20)}
    per = MAX_SMALL_ANSWER_BYTES // SMALL_BLOB_BYTES
    assert all(len(b) <= per for b in plan_batches(big))
    assert sum(len(b) for b in plan_batches(big)) == 20
