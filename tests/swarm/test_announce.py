"""The multicast codec: strict, bounded, and never raises anything but AnnounceError."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.announce import MAX_PACKET_BYTES, AnnounceError, Announcement, decode

ipv4 = st.ip_addresses(v=4).filter(lambda ip: not ip.is_multicast and not ip.is_unspecified)


@given(
    st.uuids(),
    st.lists(ipv4, min_size=1, max_size=16),
    st.integers(1, 65535),
    st.integers(0, (1 << 63) - 1),
)
def test_roundtrip(ident: uuid.UUID, addrs: list, port: int, mv: int) -> None:
    ann = Announcement(ident, tuple(str(a) for a in addrs), port, mv)
    assert decode(ann.encode()) == ann


@given(st.binary(max_size=2 * MAX_PACKET_BYTES))
def test_fuzzed_bytes_only_raise_announce_error(data: bytes) -> None:
    with contextlib.suppress(AnnounceError):
        decode(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["vigo", "uuid", "addrs", "port", "mv", "x"]), json_values))
def test_fuzzed_json_fields_only_raise_announce_error(obj: dict) -> None:
    with contextlib.suppress(AnnounceError):
        decode(json.dumps(obj).encode())


GOOD = {"vigo": "swarm/1", "uuid": str(uuid.uuid4()), "addrs": ["10.0.0.1"], "port": 1531, "mv": 0}


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"vigo": "swarm/2"}, "not a Vigo"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": "x" * 36}, "uuid"),
        ({"addrs": []}, "addrs"),
        ({"addrs": ["10.0.0.1"] * 17}, "addrs"),
        ({"addrs": ["224.0.0.42"]}, "unicast"),
        ({"addrs": ["0.0.0.0"]}, "unicast"),
        ({"addrs": ["10.0.0.1; rm -rf /"]}, "bad address"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"port": "1531"}, "port"),
        ({"mv": -1}, "manifest"),
        ({"mv": 1 << 63}, "manifest"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_each_bad_field_is_refused_with_its_reason(patch: dict, reason: str) -> None:
    with pytest.raises(AnnounceError, match=reason):
        decode(json.dumps({**GOOD, **patch}).encode())


def test_oversized_and_truncated() -> None:
    with pytest.raises(AnnounceError, match="oversized"):
        decode(b" " * (MAX_PACKET_BYTES + 1))
    good = json.dumps(GOOD).encode()
    for cut in (1, len(good) // 2, len(good) - 1):
        with pytest.raises(AnnounceError):
            decode(good[:cut])
    with pytest.raises(AnnounceError):
        decode(b"[" * 5000)  # deep nesting / size
