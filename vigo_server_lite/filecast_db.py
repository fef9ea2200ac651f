"""Filecast's tables in the server database (``server.db``, beside the envoy registry).

::

    filecast_progress     one row per (envoy, blob): the envoy's latest report
    filecast_revocations  key -> the target it named, noted when it was revoked (a
                          tombstone carries no target; this lets the list show one)
    filecast_sources      key -> where its newest record came from (an upload, or a
                          seeder's sidecar) and that record's stamp
    filecast_seeded       (seeder, key) -> what that seeder last had signed for the key:
                          the same request again signs nothing (idempotent publishing)
    swarm_seeders         the envoys an operator allowed to publish sidecars

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
from .filecast_seeded import Source
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
CREATE TABLE IF NOT EXISTS filecast_sources (
    key        TEXT PRIMARY KEY,
    hlc        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('upload', 'sidecar')),
    envoy_uuid TEXT,
    sidecar    TEXT,
    noted_at   REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS filecast_seeded (
    envoy_uuid   TEXT NOT NULL REFERENCES envoys (uuid),
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    sidecar      TEXT NOT NULL,
    hlc          INTEGER NOT NULL,
    published_at REAL NOT NULL,
    PRIMARY KEY (envoy_uuid, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS swarm_seeders (
    envoy_uuid TEXT PRIMARY KEY REFERENCES envoys (uuid),
    added_at   REAL NOT NULL
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


# ---------------------------------------------------------------------- sources


def note_source(db: sqlite3.Connection, key: str, source: Source, now: float) -> None:
    db.execute(
        "INSERT OR REPLACE INTO filecast_sources (key, hlc, kind, envoy_uuid, sidecar, noted_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (key, source.hlc, source.kind, source.envoy_uuid, source.sidecar, now),
    )


def load_sources(db: sqlite3.Connection) -> dict[str, Source]:
    rows = db.execute(
        "SELECT s.*, e.hostname FROM filecast_sources s LEFT JOIN envoys e ON e.uuid = s.envoy_uuid"
    )
    return {
        r["key"]: Source(r["hlc"], r["kind"], r["envoy_uuid"], r["hostname"], r["sidecar"])
        for r in rows
    }


def seeded_fingerprint(db: sqlite3.Connection, envoy_uuid: str, key: str) -> str | None:
    row = db.execute(
        "SELECT fingerprint FROM filecast_seeded WHERE envoy_uuid = ? AND key = ?",
        (envoy_uuid, key),
    ).fetchone()
    return None if row is None else str(row["fingerprint"])


def note_seeded(
    db: sqlite3.Connection,
    envoy_uuid: str,
    key: str,
    fingerprint: str,
    sidecar: str,
    hlc: int,
    now: float,
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO filecast_seeded (envoy_uuid, key, fingerprint, sidecar, hlc,"
        " published_at) VALUES (?, ?, ?, ?, ?, ?)",
        (envoy_uuid, key, fingerprint, sidecar, hlc, now),
    )


# ---------------------------------------------------------------------- seeders


def is_seeder(db: sqlite3.Connection, envoy_uuid: str) -> bool:
    row = db.execute("SELECT 1 FROM swarm_seeders WHERE envoy_uuid = ?", (envoy_uuid,))
    return row.fetchone() is not None


def add_seeder(db: sqlite3.Connection, envoy_uuid: str, now: float) -> bool:
    """True if the envoy was not a seeder before."""
    cur = db.execute(
        "INSERT OR IGNORE INTO swarm_seeders (envoy_uuid, added_at) VALUES (?, ?)",
        (envoy_uuid, now),
    )
    return cur.rowcount == 1


def remove_seeder(db: sqlite3.Connection, envoy_uuid: str) -> bool:
    cur = db.execute("DELETE FROM swarm_seeders WHERE envoy_uuid = ?", (envoy_uuid,))
    return cur.rowcount == 1


def seeders(db: sqlite3.Connection) -> dict[str, float]:
    """envoy uuid -> when it was made a seeder."""
    rows = db.execute("SELECT * FROM swarm_seeders ORDER BY added_at, envoy_uuid")
    return {r["envoy_uuid"]: r["added_at"] for r in rows}
