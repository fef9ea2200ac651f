"""Shared keys, record builders and Hypothesis strategies for the manifest tests.

Real Ed25519 keys (PyNaCl), fixed seeds so failures reproduce. ``server`` and one
delegated seeder are authorities; the envoy key is not.
"""

from __future__ import annotations

import hashlib

import nacl.signing
from hypothesis import strategies as st

from vigo_swarm.hlc import pack
from vigo_swarm.manifest import Manifest, Record, RecordFields, Retention, sign

SERVER_KEY = nacl.signing.SigningKey(bytes([1]) * 32)
SEEDER_KEY = nacl.signing.SigningKey(bytes([2]) * 32)
ENVOY_KEY = nacl.signing.SigningKey(bytes([3]) * 32)
SEEDER_ID = "5f0c6a3e-2d6b-4f7e-9a51-0b8c4e2f1a77"
ENVOY_ID = "a1b2c3d4-0000-4000-8000-000000000001"
AUTHORITIES = {
    "server": SERVER_KEY.verify_key.encode(),
    SEEDER_ID: SEEDER_KEY.verify_key.encode(),
}
SIGNERS = {"server": SERVER_KEY, SEEDER_ID: SEEDER_KEY}

NOW_MS = 1_750_000_000_000  # 2025-06-15, an arbitrary fixed "now"
DAY_MS = 24 * 3600 * 1000


def hexdigest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BLOB = hexdigest(b"blob")
CHUNKS = hexdigest(b"chunks")


def fields(
    key: str = "filecast/motd",
    *,
    hlc: int = pack(NOW_MS - 1000, 0),
    origin: str = "server",
    blob: str = BLOB,
    size_bytes: int = 1234,
    chunk_bytes: int = 1 << 20,
    chunks_digest: str = CHUNKS,
    targets: tuple[str, ...] = ("etc/motd",),
    retention: Retention | None = None,
    tombstone: bool = False,
) -> RecordFields:
    return RecordFields(
        key=key,
        blob=blob,
        size_bytes=size_bytes,
        chunk_bytes=chunk_bytes,
        chunks_digest=chunks_digest,
        targets=targets,
        retention=retention or Retention.until_revoked(),
        tombstone=tombstone,
        hlc=hlc,
        origin=origin,
    )


def signed(key: str = "filecast/motd", **kw: object) -> Record:
    f = fields(key, **kw)  # type: ignore[arg-type]
    return sign(f, SIGNERS[f.origin])


def fresh(**kw: int) -> Manifest:
    return Manifest(AUTHORITIES, **kw)


def state(m: Manifest) -> tuple[dict[str, tuple[int, str]], int, list[Record]]:
    return m.summary(), m.version, m.records()


# A small universe so that keys, stamps and even whole stamps collide often.
KEYS = ["filecast/a", "filecast/b", "filecast/c"]
ORIGINS = ["server", SEEDER_ID]


@st.composite
def records(draw: st.DrawFn, *, keys: list[str] = KEYS) -> Record:
    tombstone = draw(st.booleans())
    hlc = pack(NOW_MS - draw(st.integers(0, 3)), draw(st.integers(0, 2)))
    origin = draw(st.sampled_from(ORIGINS))
    key = draw(st.sampled_from(keys))
    if tombstone:
        f = fields(key, hlc=hlc, origin=origin, blob="", size_bytes=0, chunk_bytes=0,
                   chunks_digest="", targets=(), tombstone=True)  # fmt: skip
    else:
        n = draw(st.integers(0, 3))
        f = fields(key, hlc=hlc, origin=origin, blob=hexdigest(bytes([n])),
                   targets=(f"srv/file{n}",), size_bytes=n)  # fmt: skip
    return sign(f, SIGNERS[origin])


def unique_stamps(rs: list[Record]) -> list[Record]:
    """Drop records that reuse another's (key, hlc, origin): a signer never does."""
    seen: dict[tuple[str, int, str], Record] = {}
    for r in rs:
        seen.setdefault((r.key, r.hlc, r.origin), r)
    return list(seen.values())
