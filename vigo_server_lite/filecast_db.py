"""Filecast's tables in the server database (``server.db``, beside the envoy registry).

::

    filecast_progress     one row per (envoy, blob): the envoy's latest report
    filecast_revocations  key -> the target it named, noted when it was revoked (a
                          tombstone carries no target; this lets the list show one)

The records themselves live in the manifest store (``authority.py``), not here.
Invariant: an envoy's progress rows are replaced as a whole, in the same transaction as
the check-in that carried them, so a reader never sees half of two reports. A check-in
without a ``filecast`` field leaves the envoy's rows as they were.

The functions take a ``Store`` and run in its worker thread (``Database.run``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from .filecast import Progress
from .filecast_status import Reported

SCHEMA = """
CREATE TABLE IF NOT EXISTS filecast_progress (
    envoy_uuid   TEXT NOT NULL REFERENCES envoys (uuid),
    blob         TEXT NOT NULL,
    have_chunks  INTEGER NOT NULL CHECK (have_chunks >= 0),
    total_chunks INTEGER NOT NULL CHECK (total_chunks >= have_chunks),
    state        TEXT NOT NULL,
    error        TEXT,
    reported_at  REAL NOT NULL,
    PRIMARY KEY (envoy_uuid, blob)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS filecast_revocations (
    key        TEXT PRIMARY KEY,
    target     TEXT NOT NULL,
    blob       TEXT NOT NULL,
    revoked_at REAL NOT NULL
) WITHOUT ROWID;
"""


def replace_progress(
    db: sqlite3.Connection, envoy_uuid: str, items: Iterable[Progress], now: float
) -> None:
    """Inside the check-in's transaction: the envoy's report becomes exactly ``items``."""
    db.execute("DELETE FROM filecast_progress WHERE envoy_uuid = ?", (envoy_uuid,))
    db.executemany(
        "INSERT INTO filecast_progress (envoy_uuid, blob, have_chunks, total_chunks, state,"
        " error, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(envoy_uuid, p.blob, p.have_chunks, p.total_chunks, p.state, p.error, now) for p in items],
    )


def load_progress(db: sqlite3.Connection) -> dict[str, dict[str, Reported]]:
    """envoy uuid -> blob -> its latest report."""
    out: dict[str, dict[str, Reported]] = {}
    for row in db.execute("SELECT * FROM filecast_progress ORDER BY envoy_uuid, blob"):
        progress = Progress(
            row["blob"], row["have_chunks"], row["total_chunks"], row["state"], row["error"]
        )
        out.setdefault(row["envoy_uuid"], {})[row["blob"]] = Reported(progress, row["reported_at"])
    return out


def note_revocation(db: sqlite3.Connection, key: str, target: str, blob: str, now: float) -> None:
    db.execute(
        "INSERT OR REPLACE INTO filecast_revocations (key, target, blob, revoked_at)"
        " VALUES (?, ?, ?, ?)",
        (key, target, blob, now),
    )


def revocation_targets(db: sqlite3.Connection) -> dict[str, str]:
    return {row["key"]: row["target"] for row in db.execute("SELECT * FROM filecast_revocations")}
