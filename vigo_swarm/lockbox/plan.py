"""What to do for one person's lockbox on one envoy. Pure: facts in, actions out.

Facts:
- ``disk``: path → ``Stat`` of every regular file under ``~/lockbox`` (a scan);
- ``local``: path → ``Local``, what this envoy last wrote or recorded at that path
  (which record it reflects, and the file's stat then) — the person's bookkeeping,
  kept in ``~/.vigo-puddle/lockbox-state.json``, never in the swarm state;
- ``shown``: the index's ``view`` (only while the puddle is unlocked here).

Two steps, in this order, so a local edit is always recorded before anything from a
peer could overwrite it:

1. ``local_changes(local, disk)`` — needs no key (a locked member encrypts to the
   public key): a file whose stat differs from ``local`` becomes a new record that
   supersedes what ``local`` says was there; a file gone becomes a deletion record;
   a new path whose (inode, size, mtime) equals a vanished one is a rename and reuses
   its blob (no re-encryption).
2. ``remote_changes(shown, local, disk)`` — only while unlocked: a shown file whose
   record differs from ``local`` is written (if the disk still matches ``local``, i.e.
   the person has not touched it since); a path in ``local`` no longer shown is removed
   (same condition).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .records import Shown


@dataclass(frozen=True, slots=True)
class Stat:
    size: int
    mtime_ns: int
    mode: int  # permission bits
    ino: int


@dataclass(frozen=True, slots=True)
class Local:
    record: str  # the record this path reflects here
    stat: Stat  # the file's stat when we wrote or recorded it


@dataclass(frozen=True, slots=True)
class Upload:
    path: str
    stat: Stat
    supersedes: tuple[str, ...]
    reuse: str | None = None  # a record whose blob holds these bytes already (rename)


@dataclass(frozen=True, slots=True)
class Deletion:
    path: str
    supersedes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocalPlan:
    uploads: tuple[Upload, ...]
    deletions: tuple[Deletion, ...]


@dataclass(frozen=True, slots=True)
class RemotePlan:
    write: tuple[Shown, ...]
    remove: tuple[str, ...]
    blocked: tuple[str, ...]  # paths with a local change not yet recorded (next pass)


def local_changes(local: Mapping[str, Local], disk: Mapping[str, Stat]) -> LocalPlan:
    gone = {p: lf for p, lf in local.items() if p not in disk}
    by_identity = {(lf.stat.ino, lf.stat.size, lf.stat.mtime_ns): p for p, lf in gone.items()}
    uploads: list[Upload] = []
    for path in sorted(disk):
        st, lf = disk[path], local.get(path)
        if lf is not None and lf.stat == st:
            continue
        reuse = None
        if lf is None and (was := by_identity.pop((st.ino, st.size, st.mtime_ns), None)):
            reuse = gone[was].record
        uploads.append(Upload(path, st, () if lf is None else (lf.record,), reuse))
    deletions = tuple(Deletion(p, (gone[p].record,)) for p in sorted(gone))
    return LocalPlan(tuple(uploads), deletions)


def remote_changes(
    shown: Mapping[str, Shown], local: Mapping[str, Local], disk: Mapping[str, Stat]
) -> RemotePlan:
    write: list[Shown] = []
    blocked: list[str] = []
    for path in sorted(shown):
        s, lf = shown[path], local.get(path)
        if lf is not None and lf.record == s.record:
            continue
        if (lf is None and path in disk) or (lf is not None and disk.get(path) != lf.stat):
            blocked.append(path)  # touched here since: step 1 records it first
            continue
        write.append(s)
    remove = []
    for path in sorted(local):
        if path in shown:
            continue
        if disk.get(path) == local[path].stat:
            remove.append(path)
        elif path in disk:
            blocked.append(path)
    return RemotePlan(tuple(write), tuple(remove), tuple(blocked))
