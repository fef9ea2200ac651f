"""The lockbox index: a grow-only set of encrypted records. Pure (no files, no trio).

A record says "at the time I knew records S, file NAME became this blob (or was
deleted)". Its clear part is all a locked member or a peer needs — which blob to hold,
which records it replaces — and its box (an age file to the puddle key) holds the rest::

    wire:  {"blob": {"sha256", "size_bytes", "chunk_bytes", "chunks_digest"} | null,
            "supersedes": [record ids, ascending], "box": "<base64 age ciphertext>"}
    id:    SHA-256 (hex) of the canonical JSON of exactly those three keys
    box:   JSON {"v": 1, "name", "deleted", "mode", "size", "mtime_ns", "origin",
                 "origin_name", "made_ns", "blob", "supersedes"}, space-padded to a
           multiple of 256 bytes (the name's length is not visible); "blob" and
           "supersedes" repeat the clear ones and must equal them

Invariants: the set only grows (merge is union: commutative, associative, idempotent;
a locked member merges without decrypting). A record is *live* while no record in the
set supersedes it. Every member computes the same ``view`` from the same live set:
records sharing a name are ordered by (mtime_ns, made_ns, origin, id); the greatest
holds the name (nothing, if it is a deletion) and every other non-deleted one is shown
as a conflict copy ``stem.sync-conflict-YYYYMMDD-HHMMSS-<envoy>.ext`` named after its
own mtime and envoy — so concurrent edits keep both versions and no member needs to
write anything to agree. The view is *not* a CRDT merge of names: it is a pure
function of the set, which is.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..blobstore import BlobInfo, is_sha256
from ..manifest import InvalidTarget, validate_target
from .errors import BadRecord

FORMAT = 1
BOX_PAD_BYTES = 256
MAX_BOX_BYTES = 16 * 1024
MAX_SUPERSEDES = 64
MAX_BLOB_BYTES = 1 << 40
RESERVED_PREFIX = ".vigo-lockbox-"  # our temp files in ~/lockbox; never synced
_HOST_SAFE = re.compile(r"[^A-Za-z0-9-]")


def validate_name(name: Any) -> str:
    """A lockbox path: the manifest's target rules, and not one of our temp names."""
    try:
        validate_target(name)
    except InvalidTarget as exc:
        raise BadRecord("a record names an unsafe path") from exc
    if any(part.startswith(RESERVED_PREFIX) for part in name.split("/")):
        raise BadRecord("a record names a reserved path")
    return str(name)


@dataclass(frozen=True, slots=True)
class BlobRef:
    """The ciphertext blob a record points at (checked against a peer's BlobInfo)."""

    sha256: str
    size_bytes: int
    chunk_bytes: int
    chunks_digest: str

    @classmethod
    def of(cls, info: BlobInfo) -> BlobRef:
        return cls(info.sha256, info.size_bytes, info.chunk_bytes, info.chunks_digest)

    def matches(self, info: BlobInfo) -> bool:
        return self == BlobRef.of(info)

    def to_wire(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "chunk_bytes": self.chunk_bytes,
            "chunks_digest": self.chunks_digest,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> BlobRef:
        if not isinstance(obj, dict) or set(obj) != {
            "sha256",
            "size_bytes",
            "chunk_bytes",
            "chunks_digest",
        }:
            raise BadRecord("blob must be {sha256, size_bytes, chunk_bytes, chunks_digest}")
        sha, size, chunk, digest = (
            obj["sha256"],
            obj["size_bytes"],
            obj["chunk_bytes"],
            obj["chunks_digest"],
        )
        if not is_sha256(sha) or not is_sha256(digest):
            raise BadRecord("blob hashes must be 64 lowercase hex digits")
        if not _int_in(size, 1, MAX_BLOB_BYTES) or not _int_in(chunk, 64 * 1024, 16 << 20):
            raise BadRecord("blob size or chunk size out of range")
        return cls(sha, size, chunk, digest)


@dataclass(frozen=True, slots=True)
class Record:
    """The clear part of a record; ``box`` is the age ciphertext of its ``Entry``."""

    blob: BlobRef | None
    supersedes: tuple[str, ...]
    box: bytes
    id: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "blob": None if self.blob is None else self.blob.to_wire(),
            "supersedes": list(self.supersedes),
            "box": base64.b64encode(self.box).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class Entry:
    """What a record's box holds (known only to members holding the key)."""

    name: str
    deleted: bool
    mode: int  # permission bits, 0..0o777
    size: int  # plaintext bytes
    mtime_ns: int
    origin: str  # envoy UUID that made the record
    origin_name: str  # its hostname, for conflict-copy names
    made_ns: int  # wall clock when the record was made
    blob: str | None
    supersedes: tuple[str, ...]


def record_id(blob: BlobRef | None, supersedes: Iterable[str], box: bytes) -> str:
    wire = {
        "blob": None if blob is None else blob.to_wire(),
        "supersedes": list(supersedes),
        "box": base64.b64encode(box).decode("ascii"),
    }
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def make_record(blob: BlobRef | None, supersedes: Iterable[str], box: bytes) -> Record:
    sup = tuple(sorted(set(supersedes)))
    return Record(blob, sup, box, record_id(blob, sup, box))


def record_from_wire(obj: Any) -> Record:
    """Strictly decode a peer's record; the id is computed, never taken from the wire."""
    if not isinstance(obj, dict) or set(obj) != {"blob", "supersedes", "box"}:
        raise BadRecord("a record must be {blob, supersedes, box}")
    blob = None if obj["blob"] is None else BlobRef.from_wire(obj["blob"])
    sup = obj["supersedes"]
    if (
        not isinstance(sup, list)
        or len(sup) > MAX_SUPERSEDES
        or not all(is_sha256(s) for s in sup)
        or sup != sorted(set(sup))
    ):
        raise BadRecord(f"supersedes must be at most {MAX_SUPERSEDES} ascending unique ids")
    box_text = obj["box"]
    if not isinstance(box_text, str) or len(box_text) > MAX_BOX_BYTES * 4 // 3 + 4:
        raise BadRecord(f"box must be base64 of at most {MAX_BOX_BYTES} bytes")
    try:
        box = base64.b64decode(box_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord("box is not valid base64") from exc
    if not box.startswith(b"age-encryption.org/v1\n"):
        raise BadRecord("box is not an age file")
    return make_record(blob, sup, box)


def entry_payload(entry: Entry) -> bytes:
    """The box's plaintext: canonical JSON, space-padded to a multiple of 256 bytes."""
    text = json.dumps(
        {
            "v": FORMAT,
            "name": entry.name,
            "deleted": entry.deleted,
            "mode": entry.mode,
            "size": entry.size,
            "mtime_ns": entry.mtime_ns,
            "origin": entry.origin,
            "origin_name": entry.origin_name,
            "made_ns": entry.made_ns,
            "blob": entry.blob,
            "supersedes": list(entry.supersedes),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return text + b" " * (-len(text) % BOX_PAD_BYTES)


def entry_from_payload(payload: bytes, record: Record) -> Entry:
    """Decode a decrypted box and check it against the record's clear part."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord(f"record {record.id[:12]}: box is not JSON") from exc
    keys = {"v", "name", "deleted", "mode", "size", "mtime_ns", "origin", "origin_name"}
    keys |= {"made_ns", "blob", "supersedes"}
    if not isinstance(obj, dict) or set(obj) != keys or obj["v"] != FORMAT:
        raise BadRecord(f"record {record.id[:12]}: box has the wrong fields or version")
    deleted = obj["deleted"]
    if not isinstance(deleted, bool):
        raise BadRecord(f"record {record.id[:12]}: deleted must be a boolean")
    want_blob = None if record.blob is None else record.blob.sha256
    if obj["blob"] != want_blob or obj["supersedes"] != list(record.supersedes):
        raise BadRecord(f"record {record.id[:12]}: box and clear part disagree")
    if deleted != (record.blob is None):
        raise BadRecord(f"record {record.id[:12]}: a deletion has no blob, a file has one")
    if not (
        _int_in(obj["mode"], 0, 0o777)
        and _int_in(obj["size"], 0, MAX_BLOB_BYTES)
        and _int_in(obj["mtime_ns"], 0, 1 << 63)
        and _int_in(obj["made_ns"], 0, 1 << 63)
        and isinstance(obj["origin_name"], str)
        and len(obj["origin_name"]) <= 255
    ):
        raise BadRecord(f"record {record.id[:12]}: a field is out of range")
    try:
        origin = str(uuid.UUID(obj["origin"]))
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadRecord(f"record {record.id[:12]}: origin is not a UUID") from exc
    return Entry(
        name=validate_name(obj["name"]),
        deleted=deleted,
        mode=obj["mode"],
        size=obj["size"],
        mtime_ns=obj["mtime_ns"],
        origin=origin,
        origin_name=obj["origin_name"],
        made_ns=obj["made_ns"],
        blob=want_blob,
        supersedes=record.supersedes,
    )


# --------------------------------------------------------------------------- the set


def merge(ours: Mapping[str, Record], theirs: Iterable[Record]) -> dict[str, Record]:
    """Union (the CRDT merge): the records of ``theirs`` we lack, added."""
    out = dict(ours)
    for rec in theirs:
        out.setdefault(rec.id, rec)
    return out


def live_ids(records: Mapping[str, Record]) -> set[str]:
    """Ids of the records no record in the set supersedes."""
    superseded = {s for r in records.values() for s in r.supersedes}
    return set(records) - superseded


def live_blobs(records: Mapping[str, Record]) -> dict[str, BlobRef]:
    """sha256 → BlobRef of every blob a live record points at (what members hold)."""
    out: dict[str, BlobRef] = {}
    for rid in live_ids(records):
        blob = records[rid].blob
        if blob is not None:
            out[blob.sha256] = blob
    return out


@dataclass(frozen=True, slots=True)
class Shown:
    """A file as every member shows it: the record behind it and its entry."""

    path: str
    record: str
    entry: Entry


def _order(item: tuple[str, Entry]) -> tuple[int, int, str, str]:
    rid, e = item
    return (e.mtime_ns, e.made_ns, e.origin, rid)


def conflict_name(name: str, entry: Entry) -> str:
    """``dir/stem.sync-conflict-YYYYMMDD-HHMMSS-<envoy>.ext`` (Syncthing's form)."""
    when = dt.datetime.fromtimestamp(entry.mtime_ns / 1e9, dt.UTC).strftime("%Y%m%d-%H%M%S")
    envoy = _HOST_SAFE.sub("", entry.origin_name.split(".")[0])[:32] or entry.origin[:8]
    head, _, last = name.rpartition("/")
    dot = last.rfind(".")
    stem, ext = (last[:dot], last[dot:]) if dot > 0 else (last, "")
    tag = f".sync-conflict-{when}-{envoy}"
    while len((stem + tag + ext).encode()) > 255 and stem:
        stem = stem[:-1]
    return f"{head}/{stem}{tag}{ext}" if head else f"{stem}{tag}{ext}"


def view(entries: Mapping[str, Entry]) -> dict[str, Shown]:
    """path → Shown for the live entries (id → Entry): winners and conflict copies."""
    by_name: dict[str, list[tuple[str, Entry]]] = {}
    for rid, e in entries.items():
        by_name.setdefault(e.name, []).append((rid, e))
    shown: dict[str, Shown] = {}
    copies: list[tuple[str, str, Entry]] = []
    for name, group in by_name.items():
        group.sort(key=_order)
        rid, winner = group[-1]
        if not winner.deleted:
            shown[name] = Shown(name, rid, winner)
        copies += [(conflict_name(name, e), r, e) for r, e in group[:-1] if not e.deleted]
    for path, rid, e in sorted(copies, key=lambda c: (c[0], c[1])):
        if path in shown:  # two copies (or a real file) on one name: disambiguate by id
            stem, dot, ext = path.rpartition(".")
            path = f"{stem}-{rid[:8]}.{ext}" if dot and "/" not in ext else f"{path}-{rid[:8]}"
        shown[path] = Shown(path, rid, e)
    return shown


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
