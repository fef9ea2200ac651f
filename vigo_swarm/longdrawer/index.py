"""Index entries, their wire form, and the sync decision for one path (pure, no IO).

An ``Entry`` is what one envoy knows about one path in one person's folder: its kind
(file, dir, symlink), whether it is deleted (a tombstone), its version vector, who made
this version (``by``), mode and mtime, and for a file its size, SHA-256 and chunk list
(the ``BlobInfo`` the swarm transfer fetches); for a symlink its target text.

``decide(local, remote)`` is the whole conflict policy:

- remote's vector ≤ local's (EQUAL or BEFORE): nothing to do;
- remote's vector > local's (AFTER): take remote;
- concurrent, same content (kind, hash or target, mode; or both deleted): keep ours,
  merge the vectors — not a conflict;
- concurrent, different content: both keep the vector merge; the deterministic winner
  (``_rank``: an existing version beats a deletion — delete-vs-edit keeps the edit —;
  a directory beats a file or link; then the later mtime; then the larger envoy UUID)
  becomes the path's content everywhere. Whoever sees the conflict keeps the *losing*
  file or link as ``name.sync-conflict-…`` (ours renamed there, or theirs written
  there) — the name depends only on the losing version, so two envoys that both keep
  it make the same file. A conflict copy is never copied again (no pile): on a path
  that is itself a conflict copy the winner simply replaces the loser.

Every envoy decides the same way from the same two entries, so all converge.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from typing import Any

from ..blobstore import BlobInfo, InvalidBlobInfo, is_sha256
from .paths import BadPath, conflict_name, is_conflict_copy, validate_path
from .vv import MAX_COUNTER, MAX_ENTRIES, Order, VersionVector

MAX_FILE_BYTES = 1 << 44  # 16 TiB: a sanity bound on a peer's claim
MAX_TARGET_BYTES = 4096
MODE_BITS = 0o777  # setuid/setgid/sticky are not synced


class BadEntry(ValueError):
    """An index entry from a peer broke a rule; the message names the rule and path."""


class Kind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    kind: Kind
    vv: VersionVector
    by: str  # envoy UUID that made this version
    mode: int = 0
    mtime_ns: int = 0
    deleted: bool = False
    size: int = 0
    sha256: str = ""
    chunk_bytes: int = 0
    chunks: tuple[bytes, ...] = ()
    target: str = ""
    seq: int = 0  # local sequence number when this envoy last changed it (not content)

    def blob_info(self) -> BlobInfo:
        return BlobInfo(self.sha256, self.size, self.chunk_bytes, self.chunks)

    def same_content(self, other: Entry) -> bool:
        if self.deleted or other.deleted:
            return self.deleted and other.deleted
        return (
            self.kind is other.kind
            and self.mode == other.mode
            and self.sha256 == other.sha256
            and self.target == other.target
        )

    def tombstone(self, by: str, mtime_ns: int) -> Entry:
        """This entry deleted by envoy ``by`` (a new local version)."""
        return Entry(self.path, self.kind, self.vv.bump(by), by, mtime_ns=mtime_ns, deleted=True)


# --------------------------------------------------------------------------- wire


def to_wire(e: Entry) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "path": e.path,
        "kind": e.kind.value,
        "vv": e.vv.as_dict(),
        "by": e.by,
        "mode": e.mode,
        "mtime_ns": e.mtime_ns,
        "deleted": e.deleted,
        "seq": e.seq,
    }
    if e.kind is Kind.FILE and not e.deleted:
        obj |= {
            "size": e.size,
            "sha256": e.sha256,
            "chunk_bytes": e.chunk_bytes,
            "chunks": [c.hex() for c in e.chunks],
        }
    if e.kind is Kind.SYMLINK and not e.deleted:
        obj["target"] = e.target
    return obj


def _int(obj: dict[str, Any], key: str, low: int, high: int, path: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadEntry(f"{path!r:.80}: {key} must be an integer in {low}..{high}")
    return value


def _uuid(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) != 36:
        raise BadEntry(f"{what} is not a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise BadEntry(f"{what} is not a UUID") from exc


_FIELDS = {"path", "kind", "vv", "by", "mode", "mtime_ns", "deleted", "seq"}
_FILE_FIELDS = {"size", "sha256", "chunk_bytes", "chunks"}


def from_wire(obj: object) -> Entry:
    """Strictly decode one entry from a peer; BadEntry says why it was refused."""
    if not isinstance(obj, dict):
        raise BadEntry("an entry must be an object")
    try:
        path = validate_path(obj.get("path"))
    except BadPath as exc:
        raise BadEntry(str(exc)) from exc
    try:
        kind = Kind(str(obj.get("kind")))
    except ValueError as exc:
        raise BadEntry(f"{path!r:.80}: kind must be file, dir or symlink") from exc
    deleted = obj.get("deleted")
    if not isinstance(deleted, bool):
        raise BadEntry(f"{path!r:.80}: deleted must be true or false")
    allowed = set(_FIELDS)
    if kind is Kind.FILE and not deleted:
        allowed |= _FILE_FIELDS
    if kind is Kind.SYMLINK and not deleted:
        allowed.add("target")
    if unknown := set(obj) - allowed:
        raise BadEntry(f"{path!r:.80}: unexpected fields {sorted(unknown)}")
    raw_vv = obj.get("vv")
    if not isinstance(raw_vv, dict) or not 1 <= len(raw_vv) <= MAX_ENTRIES:
        raise BadEntry(f"{path!r:.80}: vv must be an object of 1..{MAX_ENTRIES} counters")
    counters = {}
    for envoy, counter in raw_vv.items():
        if not isinstance(counter, int) or isinstance(counter, bool):
            raise BadEntry(f"{path!r:.80}: a vv counter is not an integer")
        if not 1 <= counter <= MAX_COUNTER:
            raise BadEntry(f"{path!r:.80}: a vv counter is out of range")
        counters[_uuid(envoy, "a vv key")] = counter
    entry = Entry(
        path=path,
        kind=kind,
        vv=VersionVector.of(counters),
        by=_uuid(obj.get("by"), f"{path!r:.80}: by"),
        mode=_int(obj, "mode", 0, MODE_BITS, path),
        mtime_ns=_int(obj, "mtime_ns", -(1 << 62), 1 << 62, path),
        deleted=deleted,
        seq=_int(obj, "seq", 0, MAX_COUNTER, path),
    )
    if kind is Kind.FILE and not deleted:
        sha, raw_chunks = obj.get("sha256"), obj.get("chunks")
        if not is_sha256(sha):
            raise BadEntry(f"{path!r:.80}: sha256 is not 64 lowercase hex digits")
        if not isinstance(raw_chunks, list) or not all(
            isinstance(c, str) and len(c) == 64 for c in raw_chunks
        ):
            raise BadEntry(f"{path!r:.80}: chunks must be a list of 64-hex-digit hashes")
        try:
            chunks = tuple(bytes.fromhex(c) for c in raw_chunks)
            entry = replace(
                entry,
                size=_int(obj, "size", 0, MAX_FILE_BYTES, path),
                sha256=sha,
                chunk_bytes=_int(obj, "chunk_bytes", 1, 16 << 20, path),
                chunks=chunks,
            )
            entry.blob_info()  # sizes and chunk list consistent
        except (ValueError, InvalidBlobInfo) as exc:
            raise BadEntry(f"{path!r:.80}: inconsistent chunk list: {exc}") from exc
    if kind is Kind.SYMLINK and not deleted:
        target = obj.get("target")
        if (
            not isinstance(target, str)
            or not target
            or "\0" in target
            or len(target.encode("utf-8", "replace")) > MAX_TARGET_BYTES
        ):
            raise BadEntry(f"{path!r:.80}: symlink target must be 1..4096 bytes without NUL")
        entry = replace(entry, target=target)
    return entry


# ----------------------------------------------------------------------- decision


class Action(enum.Enum):
    SKIP = "skip"  # we already have this version or a newer one
    TAKE = "take"  # remote replaces ours on disk and in the index
    MERGE = "merge"  # same content: only the vector changes (and no disk write)
    KEEP_LOCAL = "keep_local"  # conflict won by ours: vector merged, disk unchanged


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    entry: Entry | None = None  # what the index should hold for the path afterwards
    conflict: bool = False
    copy_to: str = ""  # keep our losing version under this name first ("" = none)
    keep_remote_as: str = ""  # KEEP_LOCAL: write their losing version under this name


def _rank(e: Entry) -> tuple[bool, bool, int, str, str, str, int]:
    return (not e.deleted, e.kind is Kind.DIR, e.mtime_ns, e.by, e.sha256, e.target, e.mode)


def _copy_name(loser: Entry) -> str:
    if loser.deleted or loser.kind is Kind.DIR or is_conflict_copy(loser.path):
        return ""
    return conflict_name(loser.path, loser.mtime_ns, loser.by)


def decide(local: Entry | None, remote: Entry) -> Decision:
    if local is None:
        return Decision(Action.TAKE, remote)
    order = remote.vv.compare(local.vv)
    if order in (Order.EQUAL, Order.BEFORE):
        return Decision(Action.SKIP)
    if order is Order.AFTER:
        return Decision(Action.TAKE, remote)
    merged = local.vv.merge(remote.vv)
    if local.same_content(remote):
        return Decision(Action.MERGE, replace(local, vv=merged))
    if _rank(local) > _rank(remote):
        keep = _copy_name(remote)
        return Decision(Action.KEEP_LOCAL, replace(local, vv=merged), True, keep_remote_as=keep)
    return Decision(Action.TAKE, replace(remote, vv=merged), True, copy_to=_copy_name(local))
