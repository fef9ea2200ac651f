"""Gitback records and the rules they follow. Pure: no IO, no clock.

A record describes one bundle a seeder published for one person's project::

    {"seeder": "<uuid>", "person": "carol", "project": "notes", "seq": 7,
     "kind": "incremental", "base_seq": 6,
     "blob": "<sha256>", "size_bytes": 1234, "chunk_bytes": 1048576,
     "chunks_digest": "<sha256>",
     "tips": {"refs/heads/main": "<commit>", "refs/tags/v1": "<tag>"},
     "head": "refs/heads/main", "prerequisites": ["<commit>", …], "created_unix": 1.0}

Invariants the receiver keeps (``check_bundle``, ``next_to_apply``, ``plan_refs``):

1. A record is accepted only from its seeder (the peer certificate's UUID), never
   relayed: there is no signature, the mTLS channel is the proof.
2. ``seq`` grows by one per bundle of a repo on its seeder. A mirror applies a record
   only when ``seq`` is above the one it applied last: an old bundle never overwrites.
3. An ``incremental`` record's ``base_seq`` is the record it extends; it is applied
   only on top of exactly that one, and may only move refs forward (fast-forward);
   its bundle's prerequisites are ``prerequisites``.
4. A ``full`` record carries every ref and no prerequisites; it may rewrite history.
   What it overwrites or deletes stays under ``refs/gitback-backup/<seq>/…``.
5. ``tips`` is the whole ref set after the record: only ``refs/heads/*`` and
   ``refs/tags/*``; the bundle must name exactly these refs (full) or a subset of them
   with the same values (incremental), and nothing else.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..blobstore import MAX_CHUNK_BYTES, is_sha256
from .policy import USER_RE
from .repoconfig import LIMIT_BUNDLE_BYTES

Kind = Literal["full", "incremental"]
MAX_REFS = 10_000
MAX_SEQ = 1 << 53
MAX_HEADER_BYTES = 4 << 20  # a bundle header of MAX_REFS refs and prerequisites fits
BACKUP_PREFIX = "refs/gitback-backup/"
ALLOWED_PREFIXES = ("refs/heads/", "refs/tags/")
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_OID_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_CAPABILITIES = ("@object-format=sha1", "@object-format=sha256")
_FIELDS = {
    "seeder", "person", "project", "seq", "kind", "base_seq", "blob", "size_bytes",
    "chunk_bytes", "chunks_digest", "tips", "head", "prerequisites", "created_unix",
}  # fmt: skip


class RecordRejected(ValueError):
    """A record, a bundle or an application refused; the message says why."""


def check_oid(value: object, what: str) -> str:
    if not isinstance(value, str) or not _OID_RE.fullmatch(value):
        raise RecordRejected(f"{what} is not a git object id (40 or 64 lowercase hex)")
    return value


def check_ref(name: object) -> str:
    """A ref under refs/heads/ or refs/tags/ that git would accept (check-ref-format)."""
    if not isinstance(name, str) or len(name) > 1024:
        raise RecordRejected("a ref name must be a string of at most 1024 characters")
    if not name.startswith(ALLOWED_PREFIXES):
        raise RecordRejected(f"ref {name[:80]!r} is outside refs/heads/ and refs/tags/")
    parts = name.split("/")
    if (
        _BAD_REF_CHARS.search(name)
        or ".." in name
        or "@{" in name
        or name.endswith((".", "/"))
        or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)
    ):
        raise RecordRejected(f"ref {name[:80]!r} is not a valid git ref name")
    return name


def check_project(name: object) -> str:
    if not isinstance(name, str) or not PROJECT_RE.fullmatch(name):
        raise RecordRejected(f"project {str(name)[:60]!r} must match {PROJECT_RE.pattern}")
    return name


def check_person(name: object) -> str:
    if not isinstance(name, str) or not USER_RE.fullmatch(name):
        raise RecordRejected(f"person {str(name)[:40]!r} is not a login name")
    return name


def _int(obj: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RecordRejected(f"{key} must be an integer {lo}..{hi}")
    return value


@dataclass(frozen=True, slots=True)
class Record:
    seeder: uuid.UUID
    person: str
    project: str
    seq: int
    kind: Kind
    base_seq: int
    blob: str
    size_bytes: int
    chunk_bytes: int
    chunks_digest: str
    tips: Mapping[str, str] = field(hash=False)
    head: str
    prerequisites: tuple[str, ...]
    created_unix: float

    @property
    def repo(self) -> tuple[str, str, str]:
        """The repository this record is about: (seeder uuid, person, project)."""
        return (str(self.seeder), self.person, self.project)

    def to_wire(self) -> dict[str, Any]:
        return {
            "seeder": str(self.seeder),
            "person": self.person,
            "project": self.project,
            "seq": self.seq,
            "kind": self.kind,
            "base_seq": self.base_seq,
            "blob": self.blob,
            "size_bytes": self.size_bytes,
            "chunk_bytes": self.chunk_bytes,
            "chunks_digest": self.chunks_digest,
            "tips": dict(sorted(self.tips.items())),
            "head": self.head,
            "prerequisites": list(self.prerequisites),
            "created_unix": self.created_unix,
        }


def from_wire(obj: Any) -> Record:
    """A record from JSON, strictly (``RecordRejected`` naming the first problem)."""
    if not isinstance(obj, dict):
        raise RecordRejected("a record must be a JSON object")
    unknown = sorted(set(obj) - _FIELDS)
    missing = sorted(_FIELDS - set(obj))
    if unknown or missing:
        raise RecordRejected(f"record fields: unknown {unknown[:3]}, missing {missing[:3]}")
    try:
        seeder = uuid.UUID(str(obj["seeder"]))
    except ValueError:
        raise RecordRejected("seeder is not a UUID") from None
    kind = obj["kind"]
    if kind not in ("full", "incremental"):
        raise RecordRejected("kind must be 'full' or 'incremental'")
    seq = _int(obj, "seq", 1, MAX_SEQ)
    base_seq = _int(obj, "base_seq", 0, MAX_SEQ)
    tips, prereqs = obj["tips"], obj["prerequisites"]
    if not isinstance(tips, dict) or len(tips) > MAX_REFS:
        raise RecordRejected(f"tips must be an object of at most {MAX_REFS} refs")
    if not isinstance(prereqs, list) or len(prereqs) > MAX_REFS:
        raise RecordRejected(f"prerequisites must be a list of at most {MAX_REFS} ids")
    head = obj["head"]
    if head != "" and not (isinstance(head, str) and head.startswith("refs/heads/")):
        raise RecordRejected("head must be a branch (refs/heads/…) or empty")
    if head:
        check_ref(head)
    for key in ("blob", "chunks_digest"):
        if not is_sha256(obj[key]):
            raise RecordRejected(f"{key} is not a sha256 (64 lowercase hex)")
    created = obj["created_unix"]
    if isinstance(created, bool) or not isinstance(created, int | float) or created < 0:
        raise RecordRejected("created_unix must be a non-negative number")
    record = Record(
        seeder=seeder,
        person=check_person(obj["person"]),
        project=check_project(obj["project"]),
        seq=seq,
        kind=kind,
        base_seq=base_seq,
        blob=obj["blob"],
        size_bytes=_int(obj, "size_bytes", 1, LIMIT_BUNDLE_BYTES),
        chunk_bytes=_int(obj, "chunk_bytes", 1, MAX_CHUNK_BYTES),
        chunks_digest=obj["chunks_digest"],
        tips={check_ref(r): check_oid(o, f"tip of {r}") for r, o in tips.items()},
        head=head,
        prerequisites=tuple(sorted({check_oid(p, "a prerequisite") for p in prereqs})),
        created_unix=float(created),
    )
    if kind == "full" and (base_seq != 0 or record.prerequisites):
        raise RecordRejected("a full record has base_seq 0 and no prerequisites")
    if kind == "incremental" and not 1 <= base_seq < seq:
        raise RecordRejected("an incremental record extends an earlier seq (1 <= base_seq < seq)")
    if not tips and kind == "incremental":
        raise RecordRejected("an incremental record must name at least one ref")
    return record


# ----------------------------------------------------------------------- bundle header


@dataclass(frozen=True, slots=True)
class BundleHeader:
    version: int
    prerequisites: frozenset[str]
    refs: Mapping[str, str]


def parse_bundle_header(data: bytes) -> BundleHeader:
    """The header of a v2/v3 git bundle (the bytes before the pack), strictly."""
    end = data.find(b"\n\n")
    if end < 0 or end > MAX_HEADER_BYTES:
        raise RecordRejected("not a git bundle (no header end in the first 4 MiB)")
    try:
        lines = data[:end].decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise RecordRejected("the bundle header is not UTF-8") from None
    versions = {"# v2 git bundle": 2, "# v3 git bundle": 3}
    if lines[0] not in versions:
        raise RecordRejected("not a git bundle (v2 or v3 signature missing)")
    prereqs: set[str] = set()
    refs: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("@"):
            if versions[lines[0]] != 3 or line not in _CAPABILITIES:
                raise RecordRejected(f"unsupported bundle capability {line[:60]!r}")
        elif line.startswith("-"):
            prereqs.add(check_oid(line[1:].split(" ", 1)[0], "a bundle prerequisite"))
        else:
            oid, sep, ref = line.partition(" ")
            if not sep:
                raise RecordRejected("a bundle header line is malformed")
            refs[ref] = check_oid(oid, f"bundle ref {ref[:60]!r}")
        if len(prereqs) + len(refs) > 2 * MAX_REFS:
            raise RecordRejected("the bundle header names too many refs")
    return BundleHeader(versions[lines[0]], frozenset(prereqs), refs)


def check_bundle(header: BundleHeader, record: Record) -> None:
    """The bundle says what its record says, and carries only heads and tags."""
    for ref in header.refs:
        check_ref(ref)  # outside refs/heads and refs/tags: refused
    for ref, oid in header.refs.items():
        if record.tips.get(ref) != oid:
            raise RecordRejected(f"the bundle's {ref} is not the record's tip")
    if header.prerequisites != frozenset(record.prerequisites):
        raise RecordRejected("the bundle's prerequisites are not the record's")
    if record.kind == "full" and set(header.refs) != set(record.tips):
        raise RecordRejected("a full bundle must carry every ref the record names")


# --------------------------------------------------------------------- applying order


def next_to_apply(records: Iterable[Record], applied_seq: int) -> Record | None:
    """The record a mirror at ``applied_seq`` applies next, if any.

    The newest full record when the mirror is older than it; else the incremental that
    extends exactly ``applied_seq``. A gap waits (the record will come)."""
    recs = [r for r in records if r.seq > applied_seq]
    fulls = [r for r in recs if r.kind == "full"]
    if fulls:
        return max(fulls, key=lambda r: r.seq)
    nexts = [r for r in recs if r.kind == "incremental" and r.base_seq == applied_seq]
    return min(nexts, key=lambda r: r.seq) if nexts else None


def keep_from(records: Iterable[Record]) -> int:
    """Records below this seq are superseded by a newer full one (safe to forget)."""
    fulls = [r.seq for r in records if r.kind == "full"]
    return max(fulls) if fulls else 0


# ------------------------------------------------------------------------ ref updates


@dataclass(frozen=True, slots=True)
class RefPlan:
    refs: Mapping[str, str]  # every ref of the mirror afterwards (heads, tags, backups)
    moved: tuple[str, ...]  # refs whose value changed or that appeared
    backed_up: tuple[str, ...]  # backup refs made for overwritten or deleted tips


def changed_refs(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(refs present in both whose value differs, refs of ``old`` gone from ``new``)."""
    moved = sorted(r for r in new if r in old and old[r] != new[r])
    gone = sorted(r for r in old if r not in new)
    return moved, gone


def plan_refs(
    current: Mapping[str, str], record: Record, fast_forward: Mapping[str, bool]
) -> RefPlan:
    """The mirror's refs after ``record``: its tips; for a full record, every tip it
    overwrites (not a fast-forward) or deletes is kept under the backup namespace.

    ``current`` is the mirror's refs now (backups included); ``fast_forward[ref]`` says,
    for each ref of ``changed_refs`` that moved, whether its old value is an ancestor
    of its new one. An incremental record may only fast-forward and never delete."""
    live = {r: o for r, o in current.items() if r.startswith(ALLOWED_PREFIXES)}
    moved, gone = changed_refs(live, record.tips)
    rewritten = [r for r in moved if not fast_forward.get(r, False)]
    if record.kind == "incremental" and (rewritten or gone):
        what = rewritten[0] if rewritten else gone[0]
        raise RecordRejected(
            f"an incremental bundle may not rewrite or delete {what}: that takes a full one"
        )
    refs = {r: o for r, o in current.items() if r.startswith(BACKUP_PREFIX)}
    backed = []
    for ref in sorted(rewritten + gone):
        backup = f"{BACKUP_PREFIX}{record.seq}/{ref[len('refs/') :]}"
        refs[backup] = live[ref]
        backed.append(backup)
    refs.update(record.tips)
    changed = tuple(sorted(r for r in record.tips if live.get(r) != record.tips[r]))
    return RefPlan(refs, changed, tuple(backed))


def render_packed_refs(refs: Mapping[str, str]) -> bytes:
    """A ``packed-refs`` file holding exactly ``refs`` (sorted, as git wants it)."""
    lines = [b"# pack-refs with: sorted \n"]
    for name in sorted(refs, key=lambda r: r.encode()):
        lines.append(f"{refs[name]} {name}\n".encode())
    return b"".join(lines)


# -------------------------------------------------------------------- seeder decision


def choose_kind(
    last: Mapping[str, str] | None,
    current: Mapping[str, str],
    fast_forward: Mapping[str, bool],
    chain_length: int,
    max_chain: int,
) -> Kind:
    """What the seeder packs: ``full`` the first time, after a rewrite or a deleted ref,
    or when the chain of incrementals since the last full one is ``max_chain`` long;
    else ``incremental`` since ``last`` (the tips it last distributed)."""
    if last is None or chain_length >= max_chain:
        return "full"
    moved, gone = changed_refs(last, current)
    if gone or any(not fast_forward.get(r, False) for r in moved):
        return "full"
    return "incremental"
