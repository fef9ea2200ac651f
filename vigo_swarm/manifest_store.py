"""The manifest on disk: SQLite (WAL) under the envoy's state directory.

Invariants:

1. Nothing is reported accepted before it is on disk. A batch of merges is applied to
   the in-memory ``Manifest`` and written in one transaction, committed with
   ``synchronous = FULL`` before ``merge``/``merge_many`` return; if the write fails,
   the batch is undone in memory too and ``ManifestStoreError`` is raised. So a crash
   at any point loses nothing that was reported accepted, and the state after a
   restart is the last committed state.
2. Opening loads every stored record through ``Manifest.restore``: the signature is
   checked, the far-future check is not (our own clock may have gone back since). A row
   that no longer verifies (e.g. the authority key changed at re-enrollment) is left
   out and listed in ``load_errors``; it is replaced on disk by the next accepted
   record for its key.
3. Calls block (SQLite, fsync): the daemon calls them through ``trio.to_thread``; a
   lock serializes calls from several threads. Read ``store.manifest`` between calls
   (a reader racing a batch may see it before its commit).

Schema (``PRAGMA user_version = 1``)::

    CREATE TABLE records (key TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID
    -- body: the record's wire form (manifest.to_wire) as JSON
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from .hlc import DEFAULT_MAX_DRIFT_MS
from .manifest import (
    DEFAULT_TOMBSTONE_KEEP_MS,
    Manifest,
    ManifestError,
    MergeResult,
    Record,
    RecordRejected,
    from_wire,
    to_wire,
)

SCHEMA_VERSION = 1


class ManifestStoreError(ManifestError):
    """The database cannot be opened, read or written; the message names the file."""


class ManifestStore:
    """A ``Manifest`` whose accepted merges are persisted (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        authority_keys: Mapping[str, bytes],
        *,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        tombstone_keep_ms: int = DEFAULT_TOMBSTONE_KEEP_MS,
    ) -> None:
        self.path = path
        self.manifest = Manifest(
            authority_keys, max_drift_ms=max_drift_ms, tombstone_keep_ms=tombstone_keep_ms
        )
        self.load_errors: list[str] = []
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ManifestStoreError(f"cannot open the manifest database {path}: {exc}") from exc
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise ManifestStoreError(f"cannot read the manifest database {path}: {exc}") from exc
        except ManifestStoreError:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ManifestStoreError(
                f"{self.path} has schema version {version}, newer than this Vigo ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "CREATE TABLE IF NOT EXISTS records"
                " (key TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID"
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        for key, body in db.execute("SELECT key, body FROM records ORDER BY key"):
            try:
                record = from_wire(json.loads(body))
                if record.key != key:
                    raise RecordRejected(f"stored under the key {key!r}")
                self.manifest.restore(record)
            except (RecordRejected, ValueError) as exc:  # JSONDecodeError is a ValueError
                self.load_errors.append(f"{key}: {exc}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ManifestStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ merging

    def merge(self, record: Record, now_ms: int) -> MergeResult:
        """Merge and persist one record; raises RecordRejected like ``Manifest.merge``."""
        (outcome,) = self.merge_many([record], now_ms)
        if isinstance(outcome, RecordRejected):
            raise outcome
        return outcome

    def merge_many(
        self, records: Iterable[Record], now_ms: int
    ) -> list[MergeResult | RecordRejected]:
        """Merge a batch (one sync answer) in one transaction. A refused record is
        returned in its place and does not stop the others; a database failure undoes
        the whole batch, in memory too, and raises ManifestStoreError."""
        with self._lock:
            outcomes: list[MergeResult | RecordRejected] = []
            applied: list[MergeResult] = []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for record in records:
                    try:
                        result = self.manifest.merge(record, now_ms)
                    except RecordRejected as exc:
                        outcomes.append(exc)
                        continue
                    outcomes.append(result)
                    if result.accepted:
                        applied.append(result)
                        self._db.execute(
                            "INSERT OR REPLACE INTO records (key, body) VALUES (?, ?)",
                            (record.key, json.dumps(to_wire(record), separators=(",", ":"))),
                        )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(applied)
                raise ManifestStoreError(f"cannot write {self.path}: {exc}") from exc
            return outcomes

    def _rollback(self, applied: list[MergeResult]) -> None:
        for result in reversed(applied):
            self.manifest.revert(result)
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back itself
                self._db.execute("ROLLBACK")

    def expire_tombstones(self, now_ms: int, keep_ms: int | None = None) -> list[Record]:
        """``Manifest.expire_tombstones``, persisted. If the delete fails, the
        tombstones are back at the next open and simply expire again."""
        with self._lock:
            gone = self.manifest.expire_tombstones(now_ms, keep_ms)
            if gone:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "DELETE FROM records WHERE key = ?", [(r.key,) for r in gone]
                    )
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback([])
                    raise ManifestStoreError(f"cannot write {self.path}: {exc}") from exc
            return gone
