"""Gitback's table in the server database: who opted in (``gitback: true`` per person).

Until desired-state bundles exist the server holds the flag per login name; a later
issue sources it from usercrates. Only ``true`` rows matter; ``false`` is kept so an
operator sees that a person was switched off and when.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS gitback_users (
    name       TEXT PRIMARY KEY,
    gitback    INTEGER NOT NULL CHECK (gitback IN (0, 1)),
    updated_at REAL NOT NULL
) WITHOUT ROWID;
"""


def set_user(db: sqlite3.Connection, name: str, gitback: bool, now: float) -> bool:
    """Set a person's flag; True if it changed."""
    row = db.execute("SELECT gitback FROM gitback_users WHERE name = ?", (name,)).fetchone()
    if row is not None and bool(row[0]) == gitback:
        return False
    db.execute(
        "INSERT INTO gitback_users (name, gitback, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET gitback = excluded.gitback,"
        " updated_at = excluded.updated_at",
        (name, int(gitback), now),
    )
    return True


def users(db: sqlite3.Connection) -> list[tuple[str, bool, float]]:
    rows = db.execute("SELECT name, gitback, updated_at FROM gitback_users ORDER BY name")
    return [(r[0], bool(r[1]), r[2]) for r in rows]


def opted_in(db: sqlite3.Connection) -> list[str]:
    rows = db.execute("SELECT name FROM gitback_users WHERE gitback = 1 ORDER BY name")
    return [r[0] for r in rows]
