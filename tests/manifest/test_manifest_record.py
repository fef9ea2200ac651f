"""Records: field validation, target paths, canonical bytes, signatures, wire form."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st
from manifest_helpers import (
    AUTHORITIES,
    BLOB,
    CHUNKS,
    ENVOY_ID,
    ENVOY_KEY,
    SEEDER_ID,
    SERVER_KEY,
    fields,
    records,
    signed,
)

from vigo_server_lite.ca import FleetCA
from vigo_swarm.hlc import MAX_STAMP, pack
from vigo_swarm.manifest import (
    DOMAIN,
    BadSignature,
    InvalidField,
    InvalidTarget,
    MalformedRecord,
    Record,
    RecordRejected,
    Retention,
    RetentionKind,
    UnknownSigner,
    canonical_bytes,
    from_wire,
    sign,
    to_wire,
    tombstone_fields,
    validate_target,
    verify,
)

# ------------------------------------------------------------------ target paths

GOOD_TARGETS = ["etc/motd", "a", "deep/ly/nested/file.txt", "-leading-dash", "ünïcödé/名前", "a.b"]
BAD_TARGETS = {
    "": "empty",
    "/etc/passwd": "absolute",
    "../etc/passwd": "'..' component",
    "a/../../b": "'..' component",
    "a/./b": "'.' component",
    ".": "'.' component",
    "a//b": "'empty' component",
    "a/": "'empty' component",
    "a\x00b": "NUL",
    "a\\b": "backslash",
    "..\\..\\windows": "backslash",
    "a\nb": "control character",
    "a\x7fb": "control character",
    "x" * 1025: "bytes long",
    "é" * 513: "bytes long",  # 513 characters, 1026 bytes
    "a/" + "x" * 256: "over 255 bytes",
    "\udcff": "not valid UTF-8",
}


@pytest.mark.parametrize("path", GOOD_TARGETS)
def test_good_targets(path: str) -> None:
    assert validate_target(path) == path


@pytest.mark.parametrize(("path", "why"), BAD_TARGETS.items(), ids=range(len(BAD_TARGETS)))
def test_bad_targets_refused_with_the_reason(path: str, why: str) -> None:
    with pytest.raises(InvalidTarget, match=why) as info:
        validate_target(path)
    assert info.value.field == "targets"
    with pytest.raises(InvalidTarget):
        fields(targets=(path,))  # a record refuses it the same way


def test_target_limits() -> None:
    assert validate_target("x" * 255 + "/" + "y" * 255)
    assert validate_target("/".join(["x" * 200] * 5)[:1024].rstrip("/"))
    with pytest.raises(InvalidTarget, match="not a string"):
        validate_target(b"etc/motd")  # type: ignore[arg-type]
    fields(targets=tuple(f"t/{i}" for i in range(64)))
    with pytest.raises(InvalidField, match=r"1\.\.64 paths"):
        fields(targets=tuple(f"t/{i}" for i in range(65)))
    with pytest.raises(InvalidField, match=r"1\.\.64 paths"):
        fields(targets=())
    with pytest.raises(InvalidField, match="twice"):
        fields(targets=("a", "a"))


# ------------------------------------------------------------------ other fields

BAD_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("key", {"key": ""}),
    ("key", {"key": "x" * 201}),
    ("key", {"key": "Filecast/A"}),
    ("key", {"key": "/filecast/a"}),
    ("key", {"key": "filecast/../x"}),
    ("key", {"key": "filecast/a b"}),
    ("key", {"key": 5}),
    ("blob", {"blob": BLOB.upper()}),
    ("blob", {"blob": BLOB[:-1]}),
    ("blob", {"blob": ""}),
    ("chunks_digest", {"chunks_digest": "zz" * 32}),
    ("size_bytes", {"size_bytes": -1}),
    ("size_bytes", {"size_bytes": (1 << 40) + 1}),
    ("size_bytes", {"size_bytes": True}),
    ("size_bytes", {"size_bytes": 1.0}),
    ("chunk_bytes", {"chunk_bytes": 3 << 20}),
    ("chunk_bytes", {"chunk_bytes": 32 * 1024}),
    ("chunk_bytes", {"chunk_bytes": 32 << 20}),
    ("chunk_bytes", {"chunk_bytes": 0}),
    ("targets", {"targets": ["etc/motd"]}),
    ("tombstone", {"tombstone": 1}),
    ("hlc", {"hlc": 0}),
    ("hlc", {"hlc": MAX_STAMP + 1}),
    ("hlc", {"hlc": "123"}),
    ("origin", {"origin": "Server"}),
    ("origin", {"origin": ""}),
    ("origin", {"origin": "x" * 65}),
    ("origin", {"origin": "a/b"}),
]


@pytest.mark.parametrize(("name", "change"), BAD_FIELDS, ids=range(len(BAD_FIELDS)))
def test_each_invalid_field_is_named(name: str, change: dict[str, Any]) -> None:
    with pytest.raises(InvalidField) as info:
        fields(**change)
    assert info.value.field == name
    assert repr(name) in str(info.value)


def test_limits_are_inclusive() -> None:
    fields(key="x" * 200, size_bytes=1 << 40, chunk_bytes=64 * 1024)
    fields(chunk_bytes=16 << 20, size_bytes=0, hlc=MAX_STAMP, origin="x" * 64)


def test_retention_values() -> None:
    assert Retention.pinned().to_wire() == {"kind": "pinned"}
    assert Retention.expires_at(1_800_000_000).expires_at_unix == 1_800_000_000.0
    assert Retention.from_wire({"kind": "expires_at", "expires_at_unix": 5}).kind is (
        RetentionKind.EXPIRES_AT
    )
    for bad in [
        {"kind": "forever"},
        {"kind": "pinned", "expires_at_unix": 5.0},
        {"kind": "expires_at"},
        {"kind": "expires_at", "expires_at_unix": float("nan")},
        {"kind": "expires_at", "expires_at_unix": float("inf")},
        {"kind": "expires_at", "expires_at_unix": -1},
        {"kind": "expires_at", "expires_at_unix": True},
        {"kind": "expires_at", "expires_at_unix": "soon"},
        {"kind": "pinned", "extra": 1},
        "pinned",
        {},
    ]:
        with pytest.raises(InvalidField, match="retention"):
            Retention.from_wire(bad)


def test_tombstone_may_omit_blob_and_targets() -> None:
    tomb = tombstone_fields("filecast/motd", hlc=pack(1, 0), origin="server")
    assert tomb.tombstone and tomb.targets == () and tomb.blob == ""
    fields(tombstone=True, targets=("etc/motd",))  # naming them is allowed too
    with pytest.raises(InvalidField, match="blob"):
        fields(tombstone=True, blob="nothex")


# ------------------------------------------------------------------ canonical bytes


def test_canonical_bytes_are_pinned() -> None:
    f = fields(hlc=pack(1_700_000_000_000, 3), retention=Retention.expires_at(1.8e9))
    expected = (
        '{"blob":"' + BLOB + '","chunk_bytes":1048576,"chunks_digest":"' + CHUNKS + '",'
        '"hlc":111411200000000003,"key":"filecast/motd","origin":"server",'
        '"retention":{"expires_at_unix":1800000000.0,"kind":"expires_at"},'
        '"size_bytes":1234,"targets":["etc/motd"],"tombstone":false}'
    )
    assert pack(1_700_000_000_000, 3) == 111411200000000003
    assert canonical_bytes(f) == b"vigo-manifest-v1\n" + expected.encode()
    assert canonical_bytes(f).startswith(DOMAIN)
    assert canonical_bytes(sign(f, SERVER_KEY)) == canonical_bytes(f)  # signature excluded


def test_canonical_bytes_are_ascii_for_unicode_targets() -> None:
    data = canonical_bytes(fields(targets=("名前/ü",)))
    assert data.isascii() and b"\\u540d" in data


# ------------------------------------------------------------------ signatures


def test_authority_and_delegated_seeder_verify() -> None:
    verify(signed(origin="server"), AUTHORITIES)
    verify(signed(origin=SEEDER_ID), AUTHORITIES)


def test_envoy_key_is_not_an_authority() -> None:
    own = sign(fields(origin=ENVOY_ID), ENVOY_KEY)
    with pytest.raises(UnknownSigner, match="not an authority"):
        verify(own, AUTHORITIES)
    posing = sign(fields(origin="server"), ENVOY_KEY)  # claims to be the server
    with pytest.raises(BadSignature):
        verify(posing, AUTHORITIES)
    revocation = sign(tombstone_fields("filecast/motd", hlc=pack(5, 0), origin=ENVOY_ID), ENVOY_KEY)
    with pytest.raises(UnknownSigner):
        verify(revocation, AUTHORITIES)


def test_seeder_cannot_sign_as_server() -> None:
    from manifest_helpers import SEEDER_KEY

    with pytest.raises(BadSignature):
        verify(sign(fields(origin="server"), SEEDER_KEY), AUTHORITIES)


@given(st.data())
def test_any_flipped_signature_bit_is_refused(data: st.DataObject) -> None:
    record = data.draw(records())
    i = data.draw(st.integers(0, 63))
    bit = data.draw(st.integers(0, 7))
    sig = bytearray(record.signature)
    sig[i] ^= 1 << bit
    with pytest.raises(BadSignature):
        verify(dataclasses.replace(record, signature=bytes(sig)), AUTHORITIES)


TAMPER: list[tuple[str, Any]] = [
    ("key", "filecast/other"),
    ("blob", "0" * 64),
    ("size_bytes", 1235),
    ("chunk_bytes", 1 << 21),
    ("chunks_digest", "f" * 64),
    ("targets", ["etc/shadow"]),
    ("retention", {"kind": "pinned"}),
    ("tombstone", True),
    ("hlc", pack(1_750_000_000_000, 0)),
    ("origin", SEEDER_ID),
]


@pytest.mark.parametrize(("name", "value"), TAMPER, ids=[t[0] for t in TAMPER])
def test_changed_signed_field_is_refused(name: str, value: Any) -> None:
    wire = to_wire(signed())
    wire[name] = value
    with pytest.raises(BadSignature):
        verify(from_wire(wire), AUTHORITIES)


def test_signing_with_the_fleet_ca(tmp_path: Path) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    record = sign(fields(), ca.sign_record)  # the server signs through its CA object
    verify(record, {"server": bytes.fromhex(ca.authority_public_hex)})
    with pytest.raises(BadSignature):
        verify(record, AUTHORITIES)  # another fleet's authority


def test_bad_authority_key_does_not_verify() -> None:
    with pytest.raises(BadSignature):
        verify(signed(), {"server": b"short"})


# ------------------------------------------------------------------ wire form


@given(records())
def test_wire_round_trip(record: Record) -> None:
    wire = to_wire(record)
    assert from_wire(json.loads(json.dumps(wire))) == record


def test_wire_round_trip_with_expiry_and_unicode() -> None:
    record = signed(retention=Retention.expires_at(1_800_000_000.25), targets=("名前/ü",))
    again = from_wire(json.loads(json.dumps(to_wire(record))))
    assert again == record
    verify(again, AUTHORITIES)


def _wire(**changes: Any) -> dict[str, Any]:
    return {**to_wire(signed()), **changes}


BAD_WIRE: list[tuple[Any, type[RecordRejected], str]] = [
    ("not a dict", MalformedRecord, "JSON object"),
    ([1, 2], MalformedRecord, "JSON object"),
    (_wire(extra=1), MalformedRecord, "unknown fields \\['extra'\\]"),
    ({k: v for k, v in _wire().items() if k != "hlc"}, MalformedRecord, "missing fields"),
    (_wire(signature=base64.b64encode(b"x" * 63).decode()), InvalidField, "signature"),
    (_wire(signature="!" * 88), InvalidField, "base64"),
    (_wire(signature=123), InvalidField, "signature"),
    (_wire(targets="etc/motd"), InvalidField, "targets"),
    (_wire(targets=["etc/motd"] * 65), InvalidField, "targets"),
    (_wire(targets=[1]), InvalidTarget, "not a string"),
    (_wire(size_bytes="12"), InvalidField, "size_bytes"),
    (_wire(size_bytes=10**30), InvalidField, "size_bytes"),
    (_wire(tombstone="false"), InvalidField, "tombstone"),
    (_wire(hlc=True), InvalidField, "hlc"),
    (_wire(hlc=2**64), InvalidField, "hlc"),
    (_wire(key="k" * 100_000), InvalidField, "key"),
    (_wire(origin=None), InvalidField, "origin"),
    (_wire(retention=None), InvalidField, "retention"),
    (_wire(retention={"kind": "pinned", "x": 1}), InvalidField, "retention"),
]


@pytest.mark.parametrize(("obj", "exc", "match"), BAD_WIRE, ids=range(len(BAD_WIRE)))
def test_bad_wire_refused(obj: Any, exc: type[RecordRejected], match: str) -> None:
    with pytest.raises(exc, match=match):
        from_wire(obj)


def test_signature_must_be_bytes_of_64() -> None:
    f = fields()
    with pytest.raises(InvalidField, match="signature"):
        Record(**{n.name: getattr(f, n.name) for n in dataclasses.fields(f)}, signature=b"x")
    with pytest.raises(InvalidField, match="signature"):
        sign(f, lambda payload: b"short")


def test_a_foreign_key_type_is_refused() -> None:
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(BadSignature):
        verify(sign(fields(), other), AUTHORITIES)


def test_default_chunking_aims_at_256_chunks_within_bounds() -> None:
    from vigo_swarm.manifest import default_chunk_bytes

    assert default_chunk_bytes(0) == 256 * 1024
    assert default_chunk_bytes(1234) == 256 * 1024
    assert default_chunk_bytes(64 << 20) == 256 * 1024  # 256 chunks
    assert default_chunk_bytes(256 << 20) == 1 << 20  # 256 chunks
    assert default_chunk_bytes(1 << 30) == 4 << 20  # 256 chunks
    assert default_chunk_bytes(100 << 30) == 4 << 20  # capped
    assert default_chunk_bytes((64 << 20) + 1) == 512 * 1024  # never over 256 chunks
