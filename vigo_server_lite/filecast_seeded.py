"""Sidecar publications, the authority's pure side: what a seeder envoy asks the server
to sign for a ``NAME`` + ``NAME.swarm`` pair in its seed directory. No IO, no clock.

The body of ``POST /api/v1/swarm/filecast/seeded`` (the seeder's client certificate)::

    {"sidecar": "/srv/seed/motd.swarm",          # where it is, shown to operators
     "targets": ["etc/motd"],                     # 1..64 paths, each its own record
     "retention": "until_revoked",                # the distribute vocabulary
     "blob": {"sha256": H, "size_bytes": N, "chunk_bytes": C, "chunks_digest": D}}

``parse_seeded`` checks every field again with the server's own rules (``check_target``,
``parse_retention``, ``check_chunk_bytes``): nothing a seeder sends is trusted. The
server cannot check the bytes (it never holds them): the blob's identity is the
seeder's word, and every receiver verifies each chunk and the whole blob against the
signed record, so a lying seeder can only distribute what it could upload anyway.

``fingerprint`` is what makes publishing idempotent: a seeder asking again for the
same key with the same fingerprint gets no new record (also after its restart).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from vigo_swarm.blobstore import is_sha256
from vigo_swarm.manifest import MAX_SIZE_BYTES, MAX_TARGETS, Retention, retention_text

from .errors import Refusal, bad_request
from .filecast import (
    check_chunk_bytes,
    check_object,
    check_target,
    parse_retention,
    record_key,
)

SEEDED_FIELDS = frozenset({"sidecar", "targets", "retention", "blob"})
BLOB_FIELDS = frozenset({"sha256", "size_bytes", "chunk_bytes", "chunks_digest"})
MAX_SIDECAR_PATH_CHARS = 4096
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

SourceKind = Literal["upload", "sidecar"]


@dataclass(frozen=True, slots=True)
class BlobFacts:
    """What a record says about its blob (``BlobInfo`` has the same attributes)."""

    sha256: str
    size_bytes: int
    chunk_bytes: int
    chunks_digest: str


@dataclass(frozen=True, slots=True)
class SeededTarget:
    target: str
    key: str


@dataclass(frozen=True, slots=True)
class SeededRequest:
    sidecar: str
    targets: tuple[SeededTarget, ...]
    retention: Retention
    blob: BlobFacts

    @property
    def fingerprint(self) -> str:
        """Equal for two requests that would sign the same record for a key."""
        b = self.blob
        return (
            f"{b.sha256}:{b.size_bytes}:{b.chunk_bytes}:{b.chunks_digest}:"
            f"{retention_text(self.retention)}"
        )


def _need_object(value: Any, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    """``check_object``, and every field of ``allowed`` is there."""
    obj = check_object(value, allowed, what)
    missing = sorted(allowed - set(obj))
    if missing:
        raise bad_request(f"field {missing[0]!r} is required in {what}")
    return obj


def _int(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Refusal(400, "bad_blob", f"blob.{field} must be an integer in {low}..{high}")
    return value


def parse_blob(value: Any) -> BlobFacts:
    obj = _need_object(value, BLOB_FIELDS, "the field 'blob'")
    for field in ("sha256", "chunks_digest"):
        if not is_sha256(obj[field]):
            raise Refusal(400, "bad_blob", f"blob.{field} must be 64 lowercase hex digits")
    size = _int(obj["size_bytes"], "size_bytes", 0, MAX_SIZE_BYTES)
    chunk = _int(obj["chunk_bytes"], "chunk_bytes", 1, 1 << 30)
    try:
        check_chunk_bytes(chunk)
    except Refusal as exc:
        raise Refusal(400, "bad_blob", f"blob.{exc.message}") from None
    return BlobFacts(obj["sha256"], size, chunk, obj["chunks_digest"])


def parse_seeded(body: Any, now: float) -> SeededRequest:
    obj = _need_object(body, SEEDED_FIELDS, "the seeded body")
    sidecar = obj["sidecar"]
    if (
        not isinstance(sidecar, str)
        or not 0 < len(sidecar) <= MAX_SIDECAR_PATH_CHARS
        or _CONTROL_RE.search(sidecar)
    ):
        raise bad_request(
            f"'sidecar' must be a path of 1..{MAX_SIDECAR_PATH_CHARS} characters "
            "without control characters"
        )
    targets = obj["targets"]
    if not isinstance(targets, list) or not 1 <= len(targets) <= MAX_TARGETS:
        raise Refusal(400, "bad_target", f"'targets' must be a list of 1..{MAX_TARGETS} paths")
    checked: list[SeededTarget] = []
    for value in targets:
        target = check_target(value)
        if any(t.target == target for t in checked):
            raise Refusal(400, "bad_target", f"'targets' lists {target!r} twice")
        checked.append(SeededTarget(target, record_key(target)))
    retention = obj["retention"]
    if not isinstance(retention, str):
        raise Refusal(400, "bad_retention", "'retention' must be a string")
    return SeededRequest(
        sidecar, tuple(checked), parse_retention(retention, now), parse_blob(obj["blob"])
    )


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from, noted when the server signed it."""

    hlc: int
    kind: SourceKind
    envoy_uuid: str | None = None
    hostname: str | None = None
    sidecar: str | None = None


def source_json(source: Source | None, record_hlc: int) -> dict[str, Any]:
    """The ``source`` of a listed record. Records signed before sources were noted
    came from an upload (the only way then); a note for another stamp is stale."""
    if source is None:
        return {"kind": "upload"}
    if source.hlc != record_hlc:
        return {"kind": "unknown"}
    if source.kind == "upload":
        return {"kind": "upload"}
    return {
        "kind": "sidecar",
        "envoy": source.envoy_uuid,
        "hostname": source.hostname,
        "sidecar": source.sidecar,
    }
