"""The wrapped identity: round trip, wrong passphrase, and every kind of damage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.puddle import (
    CorruptIdentity,
    KdfParams,
    PuddleKey,
    WrongPassphrase,
    decode_wrapped,
    ssh_public,
    unwrap,
    wrap,
    x25519_public,
)
from vigo_swarm.puddle.keys import WRAPPED_BYTES, _header, prefer_wrapping

FAST = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)  # tests only
KEY = PuddleKey(bytes(range(32)))
WRAPPED = wrap(KEY, "correct horse", kdf=FAST)


def test_round_trip_keeps_the_key_and_stores_the_parameters() -> None:
    assert len(WRAPPED.raw) == WRAPPED_BYTES
    again = decode_wrapped(WRAPPED.raw)
    assert again == WRAPPED
    assert again.kdf == FAST and again.wrap_version == 1
    assert again.public_key == KEY.public
    assert unwrap(again, "correct horse").seed == KEY.seed
    # fresh salt and nonce every time: two wrappings of one key differ
    assert wrap(KEY, "correct horse", kdf=FAST).raw != WRAPPED.raw


def test_default_parameters_are_rfc9106_second_choice() -> None:
    from vigo_swarm.puddle import DEFAULT_KDF

    assert KdfParams(time_cost=3, memory_kib=65536, parallelism=4) == DEFAULT_KDF
    assert DEFAULT_KDF.problem() is None


def test_wrong_passphrase_is_its_own_error() -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        unwrap(WRAPPED, "correct horse ")
    with pytest.raises(WrongPassphrase):
        unwrap(WRAPPED, "")


def test_unicode_forms_of_one_passphrase_open_the_same_wrapping() -> None:
    w = wrap(KEY, "caf\u00e9", kdf=FAST)  # NFC
    assert unwrap(w, "cafe\u0301").seed == KEY.seed  # NFD


@pytest.mark.parametrize("offset", range(WRAPPED_BYTES))
def test_every_flipped_byte_is_rejected(offset: int) -> None:
    damaged = bytearray(WRAPPED.raw)
    damaged[offset] ^= 0x01
    with pytest.raises(CorruptIdentity):
        decode_wrapped(bytes(damaged))


@pytest.mark.parametrize("length", [0, 1, 8, 98, 147, 210, 212, 4096])
def test_truncated_or_extended_is_rejected(length: int) -> None:
    data = (WRAPPED.raw * 20)[:length]
    with pytest.raises(CorruptIdentity, match="bytes, not 211"):
        decode_wrapped(data)


def _signed(key: PuddleKey, t: int, m: int, p: int, version: int = 1) -> bytes:
    """A well-signed blob with arbitrary header values (what a key holder could make)."""
    hdr = _header(KdfParams(t, m, p), b"s" * 16, key.public, version, b"n" * 24)
    body = hdr + b"c" * 48
    return body + key.sign(body)


@pytest.mark.parametrize(
    ("t", "m", "p", "message"),
    [
        (0, 65536, 4, "time cost"),
        (17, 65536, 4, "time cost"),
        (3, 1024, 4, "memory"),
        (3, 4 * 1024 * 1024, 4, "memory"),  # 4 GiB: a denial-of-service file
        (3, 65536, 0, "parallelism"),
        (3, 65536, 64, "parallelism"),
    ],
)
def test_work_factors_out_of_range_are_refused_even_when_signed(
    t: int, m: int, p: int, message: str
) -> None:
    with pytest.raises(CorruptIdentity, match=message):
        decode_wrapped(_signed(KEY, t, m, p))


def test_unknown_format_version_and_kdf_are_named() -> None:
    raw = bytearray(_signed(KEY, 1, 8192, 1))
    raw[8] = 2
    with pytest.raises(CorruptIdentity, match="format version 2"):
        decode_wrapped(bytes(raw))
    raw = bytearray(_signed(KEY, 1, 8192, 1))
    raw[:8] = b"NOTOURS!"
    with pytest.raises(CorruptIdentity, match="bad magic"):
        decode_wrapped(bytes(raw))


def test_a_blob_signed_by_another_key_is_rejected() -> None:
    other = PuddleKey.generate()
    raw = bytearray(_signed(other, 1, 8192, 1))
    raw[35:67] = KEY.public  # claims to be KEY's identity
    with pytest.raises(CorruptIdentity, match="signature"):
        decode_wrapped(bytes(raw))


@given(st.binary(min_size=0, max_size=400))
def test_garbage_never_parses(data: bytes) -> None:
    with pytest.raises(CorruptIdentity):
        decode_wrapped(data)


def test_newer_wrapping_wins_and_ties_converge() -> None:
    v2 = wrap(KEY, "new one", wrap_version=2, kdf=FAST)
    v2b = wrap(KEY, "other", wrap_version=2, kdf=FAST)
    assert prefer_wrapping(WRAPPED, v2) is v2
    assert prefer_wrapping(v2, WRAPPED) is v2
    assert prefer_wrapping(v2, v2b) is prefer_wrapping(v2b, v2)
    with pytest.raises(CorruptIdentity, match="another puddle"):
        prefer_wrapping(WRAPPED, wrap(PuddleKey.generate(), "x", kdf=FAST))


def test_key_forms_for_age_and_ssh() -> None:
    line = ssh_public(KEY.public)
    assert line.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5") and line.endswith(" vigo-puddle")
    assert len(x25519_public(KEY.public)) == 32
    pem = KEY.openssh_private()
    assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert KEY.seed.hex() not in repr(KEY)
    assert struct.calcsize(">Q") == 8
