"""age v1 files with padding: exact sizes, round trips through pyrage and the Debian
``age`` CLI, and every way a ciphertext or its source can be bad."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.lockbox import DecryptFailed, SourceChanged, agefile
from vigo_swarm.puddle import PuddleKey

KEY = PuddleKey.generate()


def encrypt(data: bytes, key: PuddleKey = KEY) -> bytes:
    out = io.BytesIO()
    n = agefile.encrypt(io.BytesIO(data), len(data), out, key.public)
    assert n == len(out.getvalue())
    return out.getvalue()


def decrypt(ct: bytes, key: PuddleKey = KEY) -> bytes:
    out = io.BytesIO()
    agefile.decrypt(io.BytesIO(ct), out, key.openssh_private())
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 300, 65535, 65536, 65537, 3 * 65536, 1_000_003])
def test_round_trip_and_exact_padded_size(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ct = encrypt(data)
    assert len(ct) == agefile.encrypted_size(size) == agefile.padded_size(len(ct))
    assert ct.startswith(b"age-encryption.org/v1\n-> ssh-ed25519 ")
    assert b"\n-> vigo-pad " in ct
    assert decrypt(ct) == data


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("age") is None, reason="the Debian age CLI is not installed")
@pytest.mark.parametrize("size", [0, 5, 65536, 2_500_000])
def test_the_age_cli_decrypts_it_with_the_exported_identity(tmp_path: Path, size: int) -> None:
    data = bytes((i * 7) % 251 for i in range(size))
    (tmp_path / "f.age").write_bytes(encrypt(data))
    (tmp_path / "id").write_bytes(KEY.openssh_private())
    (tmp_path / "id").chmod(0o600)
    out = subprocess.run(
        ["age", "-d", "-i", str(tmp_path / "id"), str(tmp_path / "f.age")],
        capture_output=True,
        check=True,
    )
    assert out.stdout == data


@given(st.integers(min_value=0, max_value=1 << 40))
def test_padme_buckets_are_monotonic_and_cost_at_most_12_percent(size: int) -> None:
    p = agefile.padded_size(size)
    assert size <= p <= max(size + 1, int(size * 1.12) + 1)
    assert agefile.padded_size(p) == p  # a bucket boundary stays put
    assert agefile.padded_size(size + 1) >= p


@given(st.integers(min_value=0, max_value=1 << 40))
def test_buckets_are_padme_up_to_4_mib_then_64_kib_steps(size: int) -> None:
    b = agefile.bucket(size)
    assert size <= b and b - size <= agefile.MAX_PAD_BYTES
    if size <= 4 << 20:
        assert b == agefile.padded_size(size)
    else:
        assert b % agefile.MAX_PAD_BYTES == 0


def test_a_large_file_pads_to_64_kib_and_still_decrypts() -> None:
    size = 5 * (1 << 20) + 12345
    ct = encrypt(bytes(size))
    assert len(ct) % agefile.MAX_PAD_BYTES == 0 and len(ct) - size <= agefile.MAX_PAD_BYTES
    assert decrypt(ct) == bytes(size)


def test_padme_gives_few_distinct_sizes() -> None:
    buckets = {agefile.padded_size(n) for n in range(1 << 20, 1 << 21)}
    assert len(buckets) == 33  # a 1-2 MiB file is one of 33 sizes, 32 KiB apart


@given(st.integers(min_value=15, max_value=5000))
def test_a_pad_stanza_can_take_any_length(length: int) -> None:
    stanza = agefile.pad_stanza(length)
    assert len(stanza) == length and stanza.startswith(b"-> vigo-pad A")
    assert stanza.endswith(b"\n") and len(stanza.split(b"\n")[-2]) < 64


def test_a_pad_stanza_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        agefile.pad_stanza(14)


@pytest.mark.parametrize(
    "damage",
    [
        lambda ct: ct[:-1],  # truncated payload
        lambda ct: ct[: len(ct) // 2],
        lambda ct: ct[:40],  # truncated header
        lambda ct: ct[:-5] + bytes([ct[-5] ^ 1]) + ct[-4:],  # flipped tag bit
        lambda ct: ct.replace(b"vigo-pad A", b"vigo-pad B", 1),  # header MAC
        lambda ct: ct + b"\0",  # trailing data
        lambda ct: b"not age at all",
    ],
    ids=["truncated-1", "truncated-half", "header-cut", "flipped", "header", "trailing", "junk"],
)
def test_altered_ciphertext_is_refused(damage) -> None:  # type: ignore[no-untyped-def]
    ct = encrypt(b"secret " * 20000)
    with pytest.raises(DecryptFailed):
        decrypt(damage(ct))


def test_another_puddles_key_cannot_decrypt() -> None:
    with pytest.raises(DecryptFailed):
        decrypt(encrypt(b"for KEY only"), PuddleKey.generate())


def test_a_source_that_shrinks_or_grows_while_read_is_reported() -> None:
    with pytest.raises(SourceChanged, match="shrank"):
        agefile.encrypt(io.BytesIO(b"short"), 100, io.BytesIO(), KEY.public)
    with pytest.raises(SourceChanged, match="grew"):
        agefile.encrypt(io.BytesIO(b"longer than said"), 4, io.BytesIO(), KEY.public)


def test_two_encryptions_of_one_file_differ_but_have_one_size() -> None:
    a, b = encrypt(b"same"), encrypt(b"same")
    assert a != b and len(a) == len(b)
