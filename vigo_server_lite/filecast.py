"""Filecast, the authority's pure side: what an admin or an envoy sends, checked, and
the views the API answers with. No IO, no clock (``now`` is an argument).

- ``record_key(target)``: ``filecast/<first 40 hex of sha256(target)>``. One key per
  target, so distributing to a target again replaces its record (LWW) and revoking a
  target needs nothing but the target.
- ``parse_distribute``: the query of ``POST /api/v1/swarm/filecast`` (target, retention,
  chunk_bytes), strict: an unknown parameter is refused, never ignored.
- ``parse_revoke`` and ``parse_sync``: the JSON bodies of revoke and manifest sync.
- ``parse_progress``: the optional ``filecast`` list of a check-in (envoy progress).
- ``is_live`` and ``record_json``: what ``GET /api/v1/swarm/filecast`` lists.

Every ``parse_*`` raises ``Refusal`` (400, a stable code) naming the field and the
problem. The status view (per record, per envoy) is in ``filecast_status``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from vigo_swarm.hlc import format_stamp
from vigo_swarm.manifest import (
    MAX_CHUNK_BYTES,
    MAX_SIZE_BYTES,
    MIN_CHUNK_BYTES,
    InvalidRetention,
    InvalidTarget,
    MalformedSummary,
    Record,
    Retention,
    RetentionKind,
    Summary,
    retention_text,
    summary_from_wire,
    validate_target,
)
from vigo_swarm.manifest import parse_retention as manifest_parse_retention

from .errors import Refusal, bad_request

KEY_PREFIX = "filecast/"
KEY_HEX_CHARS = 40
MAX_PROGRESS_ITEMS = 1000
MAX_ERROR_CHARS = 500
MAX_CHUNKS = MAX_SIZE_BYTES // MIN_CHUNK_BYTES  # the most chunks a valid record can have
DISTRIBUTE_PARAMS = frozenset({"target", "retention", "chunk_bytes"})

ProgressState = Literal["missing", "partial", "complete", "materialized", "error"]
PROGRESS_STATES: tuple[str, ...] = get_args(ProgressState)
PROGRESS_FIELDS = frozenset({"blob", "have_chunks", "total_chunks", "state", "error"})

_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def record_key(target: str) -> str:
    """The manifest key of ``target``'s record (the target must be valid already)."""
    digest = hashlib.sha256(target.encode("utf-8")).hexdigest()
    return KEY_PREFIX + digest[:KEY_HEX_CHARS]


def check_target(value: object) -> str:
    """A valid target path, or ``Refusal(400, "bad_target")`` saying what is wrong."""
    if not isinstance(value, str):
        raise Refusal(400, "bad_target", "the target must be a string path")
    try:
        return validate_target(value)
    except InvalidTarget as exc:
        raise Refusal(400, "bad_target", exc.reason) from None


def parse_retention(text: str, now: float) -> Retention:
    """``until_revoked`` | ``pinned`` | ``expires_at:<unix seconds>`` (in the future)."""
    try:
        return manifest_parse_retention(text, now)
    except InvalidRetention as exc:
        raise Refusal(400, "bad_retention", exc.reason) from None


def parse_chunk_bytes(text: str | None) -> int | None:
    """A power of two in 64 KiB..16 MiB, or None when not given."""
    if text is None:
        return None
    if not text.isdigit() or len(text) > 9:
        raise Refusal(400, "bad_chunk_bytes", f"chunk_bytes {text[:40]!r} is not an integer")
    return check_chunk_bytes(int(text))


def check_chunk_bytes(value: int) -> int:
    if not (MIN_CHUNK_BYTES <= value <= MAX_CHUNK_BYTES and value & (value - 1) == 0):
        raise Refusal(
            400,
            "bad_chunk_bytes",
            f"chunk_bytes must be a power of two from {MIN_CHUNK_BYTES} (64 KiB) to "
            f"{MAX_CHUNK_BYTES} (16 MiB), not {value}",
        )
    return value


@dataclass(frozen=True, slots=True)
class DistributeRequest:
    target: str
    key: str
    retention: Retention
    chunk_bytes: int | None  # None: the seed's existing chunking, else the default


def parse_distribute(query: Mapping[str, str], now: float) -> DistributeRequest:
    unknown = sorted(set(query) - DISTRIBUTE_PARAMS)
    if unknown:
        known = ", ".join(sorted(DISTRIBUTE_PARAMS))
        raise bad_request(f"unknown query parameter {unknown[0][:40]!r} (known: {known})")
    if "target" not in query:
        raise Refusal(400, "bad_target", "the query parameter 'target' is required")
    target = check_target(query["target"])
    retention = parse_retention(query.get("retention", RetentionKind.UNTIL_REVOKED.value), now)
    chunk_bytes = parse_chunk_bytes(query.get("chunk_bytes"))
    return DistributeRequest(target, record_key(target), retention, chunk_bytes)


def check_object(body: Any, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    """``body`` if it is a JSON object with no field outside ``allowed``; ``what`` names
    it in the refusal (``the revoke body``)."""
    if not isinstance(body, dict):
        raise bad_request(f"{what} must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"unknown field {str(unknown[0])[:40]!r} in {what}")
    return body


def parse_revoke(body: Any) -> tuple[str, str]:
    """``{"target": PATH}`` → (target, record key)."""
    obj = check_object(body, frozenset({"target"}), "the revoke body")
    if "target" not in obj:
        raise Refusal(400, "bad_target", "field 'target' is required")
    target = check_target(obj["target"])
    return target, record_key(target)


def parse_sync(body: Any) -> Summary:
    """``{"summary": {key: [hlc, origin]}}`` from an envoy, strictly."""
    obj = check_object(body, frozenset({"summary"}), "the manifest sync body")
    if "summary" not in obj:
        raise Refusal(400, "bad_summary", "field 'summary' is required")
    try:
        return summary_from_wire(obj["summary"])
    except MalformedSummary as exc:
        raise Refusal(400, "bad_summary", str(exc)) from None


# ----------------------------------------------------------------- envoy progress


@dataclass(frozen=True, slots=True)
class Progress:
    """One blob's state on one envoy, as the envoy reported it at check-in."""

    blob: str
    have_chunks: int
    total_chunks: int
    state: ProgressState
    error: str | None = None


def _count(item: Mapping[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CHUNKS:
        raise Refusal(
            400, "bad_progress", f"{where}: {key!r} must be an integer in 0..{MAX_CHUNKS}"
        )
    return value


def _progress_item(item: Any, where: str) -> Progress:
    if not isinstance(item, dict):
        raise Refusal(400, "bad_progress", f"{where} must be an object")
    unknown = sorted(set(item) - PROGRESS_FIELDS)
    if unknown:
        raise Refusal(400, "bad_progress", f"{where}: unknown field {str(unknown[0])[:40]!r}")
    blob = item.get("blob")
    if not isinstance(blob, str) or not _HEX64_RE.fullmatch(blob):
        raise Refusal(400, "bad_progress", f"{where}: 'blob' must be 64 lowercase hex digits")
    have, total = _count(item, "have_chunks", where), _count(item, "total_chunks", where)
    state = item.get("state")
    if state not in PROGRESS_STATES:
        raise Refusal(
            400, "bad_progress", f"{where}: 'state' must be one of {', '.join(PROGRESS_STATES)}"
        )
    if have > total:
        raise Refusal(400, "bad_progress", f"{where}: have_chunks {have} > total_chunks {total}")
    if state in ("complete", "materialized") and have != total:
        raise Refusal(400, "bad_progress", f"{where}: a {state} blob has every chunk")
    if state == "missing" and have != 0:
        raise Refusal(400, "bad_progress", f"{where}: a missing blob has no chunk")
    error = item.get("error")
    if error is not None and (
        not isinstance(error, str) or len(error) > MAX_ERROR_CHARS or _CONTROL_RE.search(error)
    ):
        raise Refusal(
            400,
            "bad_progress",
            f"{where}: 'error' must be a string of at most {MAX_ERROR_CHARS} characters "
            "without control characters",
        )
    return Progress(blob, have, total, state, error or None)


def parse_progress(value: Any) -> tuple[Progress, ...]:
    """The check-in's ``filecast`` list: at most 1000 items, one per blob."""
    if not isinstance(value, list):
        raise Refusal(400, "bad_progress", "field 'filecast' must be a list")
    if len(value) > MAX_PROGRESS_ITEMS:
        raise Refusal(
            400, "bad_progress", f"field 'filecast' holds more than {MAX_PROGRESS_ITEMS} items"
        )
    items = tuple(_progress_item(item, f"filecast[{i}]") for i, item in enumerate(value))
    seen: set[str] = set()
    for item in items:
        if item.blob in seen:
            raise Refusal(400, "bad_progress", f"field 'filecast' lists blob {item.blob} twice")
        seen.add(item.blob)
    return items


# --------------------------------------------------------------------------- views


def is_live(record: Record, now: float) -> bool:
    """Not revoked and not expired: envoys should hold it and have its target."""
    if record.tombstone:
        return False
    expires = record.retention.expires_at_unix
    return expires is None or expires > now


def num_chunks(record: Record) -> int:
    if record.chunk_bytes <= 0:
        return 0
    return -(-record.size_bytes // record.chunk_bytes)


def record_json(record: Record, now: float) -> dict[str, Any]:
    """One add record as ``GET /api/v1/swarm/filecast`` lists it."""
    return {
        "key": record.key,
        "target": record.targets[0] if record.targets else None,
        "targets": list(record.targets),
        "blob": record.blob,
        "size_bytes": record.size_bytes,
        "chunk_bytes": record.chunk_bytes,
        "chunks": num_chunks(record),
        "retention": record.retention.to_wire(),
        "retention_text": retention_text(record.retention),
        "live": is_live(record, now),
        "hlc": record.hlc,
        "hlc_time": format_stamp(record.hlc),
        "origin": record.origin,
    }


def revocation_json(record: Record, target: str | None) -> dict[str, Any]:
    """One tombstone; ``target`` is what the server noted at revoke time, if anything."""
    return {
        "key": record.key,
        "target": target,
        "hlc": record.hlc,
        "hlc_time": format_stamp(record.hlc),
        "origin": record.origin,
    }
