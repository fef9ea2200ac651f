"""The longdrawer index in SQLite (WAL): one row per (person, path), tombstones included.

Blocking; the service calls it through ``trio.to_thread`` and a lock serializes use of
the one connection. Invariants:

1. Every change to a person's rows takes the next value of that person's ``seq``; a
   peer that has pulled everything up to ``seq`` S needs exactly the rows with seq > S.
2. ``epoch`` is random per person per database: a peer whose remembered epoch differs
   (we lost our database) starts again from 0 instead of missing changes.
3. ``disk`` is the on-disk signature (inode, size, mtime, mode, kind) when the row was
   last written by a scan or by applying a peer's version; a scan re-hashes a path only
   when the signature differs.
4. A batch of rows is stored in one transaction: all of it or nothing.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .index import Entry, Kind
from .vv import VersionVector

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    person TEXT PRIMARY KEY, epoch TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    person TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, vv TEXT NOT NULL,
    by TEXT NOT NULL, mode INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    deleted INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    chunk_bytes INTEGER NOT NULL, chunks BLOB NOT NULL, target TEXT NOT NULL,
    seq INTEGER NOT NULL, disk TEXT NOT NULL, PRIMARY KEY (person, path));
CREATE INDEX IF NOT EXISTS entries_seq ON entries (person, seq);
CREATE TABLE IF NOT EXISTS progress (
    person TEXT NOT NULL, peer TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (person, peer));
"""

_COLUMNS = (
    "path, kind, vv, by, mode, mtime_ns, deleted, size, sha256, chunk_bytes, chunks, target, "
    "seq, disk"
)


class IndexStoreError(Exception):
    """The index database failed (the message says what we were doing)."""


def _row_to_entry(row: tuple[Any, ...]) -> tuple[Entry, str]:
    (path, kind, vv, by, mode, mtime_ns, deleted, size, sha, cbytes, chunks, target, seq, disk) = (
        row
    )
    raw = bytes(chunks)
    entry = Entry(
        path=str(path),
        kind=Kind(kind),
        vv=VersionVector.of(json.loads(str(vv))),
        by=str(by),
        mode=int(mode),
        mtime_ns=int(mtime_ns),
        deleted=bool(deleted),
        size=int(size),
        sha256=str(sha),
        chunk_bytes=int(cbytes),
        chunks=tuple(raw[i : i + 32] for i in range(0, len(raw), 32)),
        target=str(target),
        seq=int(seq),
    )
    return entry, str(disk)


class IndexStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise IndexStoreError(f"opening the longdrawer index {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _person(self, person: str) -> tuple[str, int]:
        row = self._db.execute("SELECT epoch, seq FROM people WHERE person=?", (person,)).fetchone()
        if row is None:
            epoch = secrets.token_hex(8)
            self._db.execute("INSERT INTO people VALUES (?, ?, 0)", (person, epoch))
            return epoch, 0
        return str(row[0]), int(row[1])

    def state(self, person: str) -> tuple[str, int]:
        """(epoch, seq) of a person's index."""
        with self._lock, _errors("reading the index state"):
            return self._person(person)

    def get(self, person: str, path: str) -> tuple[Entry, str] | None:
        with self._lock, _errors("reading the index"):
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE person=? AND path=?",  # noqa: S608
                (person, path),
            ).fetchone()
        return None if row is None else _row_to_entry(row)

    def get_many(self, person: str, paths: list[str]) -> dict[str, tuple[Entry, str]]:
        """``get`` for many paths at once (those not in the index are left out)."""
        found: dict[str, tuple[Entry, str]] = {}
        with self._lock, _errors("reading the index"):
            for at in range(0, len(paths), 500):  # SQLite's bound-parameter limit
                part = paths[at : at + 500]
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM entries WHERE person=? "  # noqa: S608
                    f"AND path IN ({','.join('?' * len(part))})",
                    (person, *part),
                ).fetchall()
                found.update((str(r[0]), _row_to_entry(r)) for r in rows)
        return found

    def all(self, person: str) -> dict[str, tuple[Entry, str]]:
        with self._lock, _errors("reading the index"):
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE person=?",  # noqa: S608
                (person,),
            ).fetchall()
        return {str(r[0]): _row_to_entry(r) for r in rows}

    def since(self, person: str, seq: int, limit: int) -> tuple[list[Entry], int]:
        """Rows changed after ``seq`` (oldest first, at most ``limit``) and the current seq."""
        with self._lock, _errors("reading the index"):
            _, current = self._person(person)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE person=? AND seq>? "  # noqa: S608
                "ORDER BY seq LIMIT ?",
                (person, seq, limit),
            ).fetchall()
        return [_row_to_entry(r)[0] for r in rows], current

    def put(self, person: str, rows: Iterable[tuple[Entry, str]]) -> int:
        """Store entries (with their disk signatures), each at a new seq; the last seq."""
        with self._lock, _errors("writing the index"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                _, seq = self._person(person)
                for entry, disk in rows:
                    seq += 1
                    e = entry
                    self._db.execute(
                        f"INSERT OR REPLACE INTO entries ({_COLUMNS}, person) "  # noqa: S608
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            e.path,
                            e.kind.value,
                            json.dumps(e.vv.as_dict(), sort_keys=True),
                            e.by,
                            e.mode,
                            e.mtime_ns,
                            int(e.deleted),
                            e.size,
                            e.sha256,
                            e.chunk_bytes,
                            b"".join(e.chunks),
                            e.target,
                            seq,
                            disk,
                            person,
                        ),
                    )
                self._db.execute("UPDATE people SET seq=? WHERE person=?", (seq, person))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return seq

    def set_disk(self, person: str, path: str, disk: str) -> None:
        """Record a new on-disk signature without a new version (e.g. an mtime we set)."""
        with self._lock, _errors("writing the index"):
            self._db.execute(
                "UPDATE entries SET disk=? WHERE person=? AND path=?", (disk, person, path)
            )

    def progress(self, person: str, peer: str) -> tuple[str, int]:
        with self._lock, _errors("reading sync progress"):
            row = self._db.execute(
                "SELECT epoch, seq FROM progress WHERE person=? AND peer=?", (person, peer)
            ).fetchone()
        return ("", 0) if row is None else (str(row[0]), int(row[1]))

    def set_progress(self, person: str, peer: str, epoch: str, seq: int) -> None:
        with self._lock, _errors("writing sync progress"):
            self._db.execute(
                "INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?)", (person, peer, epoch, seq)
            )

    def referenced_blobs(self) -> set[str]:
        """Hashes of every live file version in every person's index (kept from GC)."""
        with self._lock, _errors("reading the index"):
            rows = self._db.execute(
                "SELECT DISTINCT sha256 FROM entries WHERE deleted=0 AND kind='file'"
            ).fetchall()
        return {str(r[0]) for r in rows}

    def live_blobs(self, person: str) -> set[str]:
        """Hashes of the person's live file versions (what partners may fetch from us)."""
        with self._lock, _errors("reading the index"):
            rows = self._db.execute(
                "SELECT DISTINCT sha256 FROM entries WHERE person=? AND deleted=0 AND kind='file'",
                (person,),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def live_files(self, person: str) -> dict[str, tuple[str, int]]:
        """Each live file version's hash -> (one path holding it, its size)."""
        with self._lock, _errors("reading the index"):
            rows = self._db.execute(
                "SELECT sha256, path, size FROM entries "
                "WHERE person=? AND deleted=0 AND kind='file'",
                (person,),
            ).fetchall()
        return {str(sha): (str(path), int(size)) for sha, path, size in rows}

    def counts(self, person: str) -> dict[str, int]:
        with self._lock, _errors("reading the index"):
            row = self._db.execute(
                "SELECT SUM(kind='file' AND deleted=0), SUM(kind='dir' AND deleted=0), "
                "SUM(kind='symlink' AND deleted=0), SUM(deleted), "
                "SUM(CASE WHEN deleted=0 THEN size ELSE 0 END) FROM entries WHERE person=?",
                (person,),
            ).fetchone()
        keys = ("files", "dirs", "symlinks", "tombstones", "bytes")
        return {k: int(v or 0) for k, v in zip(keys, row, strict=True)}


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise IndexStoreError(f"{what}: {exc}") from exc
