"""The server lite's SQLite database (WAL): join tokens, envoys, certificates, and
filecast's progress reports (tables in ``filecast_db``).

``Store`` is synchronous and owns one connection; ``Database`` runs its methods in a
worker thread through a one-slot ``trio.CapacityLimiter``, so the event loop never
blocks on SQLite and every operation is serialized. Serializing is what makes the
invariants below cheap to keep under hundreds of concurrent enrollments (each call is
a millisecond or two), and ``BEGIN IMMEDIATE`` keeps them true even against another
process writing the same file.

Invariants:

- a token's use count only grows through ``enroll``, by a conditional increment in
  the same transaction that records the envoy: a use is never lost or doubled;
- at most one ``active`` envoy per hostname (partial unique index);
- an envoy's certificate serials are recorded in the same transaction as the envoy;
- a check-in's filecast progress is stored in the check-in's own transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from . import filecast_db
from .errors import Refusal, SetupError
from .registry import EnvoyRecord, serial_hex
from .tokens import JoinToken, TokenRecord, check_usable
from .validation import CheckinRequest

T = TypeVar("T")
SCHEMA_VERSION = 3  # 2: filecast_progress, filecast_revocations; 3: sources, seeders

_SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    id            TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    max_uses      INTEGER NOT NULL CHECK (max_uses >= 1),
    uses          INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    revoked_at    REAL
);
CREATE TABLE IF NOT EXISTS envoys (
    uuid              TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'replaced')),
    enrolled_at       REAL NOT NULL,
    token_id          TEXT,
    last_checkin      REAL,
    addresses         TEXT NOT NULL DEFAULT '[]',
    port              INTEGER,
    manifest_version  INTEGER,
    reported_hostname TEXT,
    state_changed_at  REAL,
    replaced_by       TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS envoys_one_active_hostname
    ON envoys (hostname) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS certificates (
    serial     TEXT PRIMARY KEY,
    uuid       TEXT NOT NULL REFERENCES envoys (uuid),
    issued_at  REAL NOT NULL,
    not_after  REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS certificates_uuid ON certificates (uuid);
"""


@dataclass(frozen=True, slots=True)
class Issued:
    """What the CA hands back for an enrollment (kept free of the CA's own types)."""

    pem: bytes
    serial: int
    not_after: float


@dataclass(frozen=True, slots=True)
class Enrollment:
    envoy: EnvoyRecord
    certificate_pem: bytes
    replaced: tuple[str, ...]  # UUIDs whose certificates this enrollment revoked


class Store:
    def __init__(self, path: Path) -> None:
        try:
            self._conn = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA + filecast_db.SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise SetupError(f"cannot open the database {path}: {exc}") from exc
        self._lock = threading.Lock()
        # Bumped whenever peer hints or the revocation list may have changed.
        self.generation = 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any exception), for the
        table modules (``filecast_db``) that share this connection."""
        return self._txn()

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ---------------------------------------------------------------------- tokens

    def insert_token(self, record: TokenRecord) -> bool:
        """False if the id is taken (the caller draws another)."""
        with self._txn() as db:
            try:
                db.execute(
                    "INSERT INTO join_tokens (id, secret_sha256, description, created_at,"
                    " expires_at, max_uses, uses, revoked_at) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        record.id,
                        record.secret_sha256,
                        record.description,
                        record.created_at,
                        record.expires_at,
                        record.max_uses,
                        record.uses,
                        record.revoked_at,
                    ),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._txn() as db:
            return _token_or_none(db, token_id)

    def list_tokens(self) -> list[TokenRecord]:
        with self._txn() as db:
            rows = db.execute("SELECT * FROM join_tokens ORDER BY created_at, id").fetchall()
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str, now: float) -> TokenRecord | None:
        with self._txn() as db:
            db.execute(
                "UPDATE join_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, token_id),
            )
            return _token_or_none(db, token_id)

    # --------------------------------------------------------------------- enroll

    def enroll(
        self,
        token: JoinToken,
        ca_fingerprint: str,
        hostname: str,
        now: float,
        issue: Callable[[uuid.UUID], Issued],
    ) -> Enrollment:
        """Use the token, issue the certificate, retire the hostname's previous envoy.

        All or nothing: a refusal or a failure to issue rolls every step back.
        """
        with self._txn() as db:
            record = check_usable(_token_or_none(db, token.id), token, ca_fingerprint, now)
            used = db.execute(
                "UPDATE join_tokens SET uses = uses + 1 WHERE id = ? AND uses < max_uses"
                " AND revoked_at IS NULL AND expires_at > ?",
                (record.id, now),
            ).rowcount
            if used != 1:  # cannot happen while calls are serialized; refuse, never over-use
                raise Refusal(403, "token_exhausted", f"join token {token.id} is used up")
            envoy_uuid = uuid.uuid4()
            issued = issue(envoy_uuid)
            old = [
                r["uuid"]
                for r in db.execute(
                    "SELECT uuid FROM envoys WHERE hostname = ? AND state = 'active'", (hostname,)
                )
            ]
            for old_uuid in old:
                db.execute(
                    "UPDATE envoys SET state = 'replaced', state_changed_at = ?, replaced_by = ?"
                    " WHERE uuid = ?",
                    (now, str(envoy_uuid), old_uuid),
                )
                db.execute(
                    "UPDATE certificates SET revoked_at = ? WHERE uuid = ? AND revoked_at IS NULL",
                    (now, old_uuid),
                )
            db.execute(
                "INSERT INTO envoys (uuid, hostname, state, enrolled_at, token_id,"
                " state_changed_at) VALUES (?, ?, 'active', ?, ?, ?)",
                (str(envoy_uuid), hostname, now, record.id, now),
            )
            db.execute(
                "INSERT INTO certificates (serial, uuid, issued_at, not_after) VALUES (?,?,?,?)",
                (serial_hex(issued.serial), str(envoy_uuid), now, issued.not_after),
            )
            envoy = _envoy_or_none(db, str(envoy_uuid))
        assert envoy is not None
        if old:
            self.generation += 1
        return Enrollment(envoy, issued.pem, tuple(old))

    # --------------------------------------------------------------------- envoys

    def get_envoy(self, envoy_uuid: str) -> EnvoyRecord | None:
        with self._txn() as db:
            return _envoy_or_none(db, envoy_uuid)

    def active_envoy_named(self, hostname: str) -> EnvoyRecord | None:
        with self._txn() as db:
            row = db.execute(
                "SELECT uuid FROM envoys WHERE hostname = ? AND state = 'active'", (hostname,)
            ).fetchone()
            return None if row is None else _envoy_or_none(db, row["uuid"])

    def list_envoys(self) -> list[EnvoyRecord]:
        with self._txn() as db:
            certs: dict[str, list[sqlite3.Row]] = {}
            for row in db.execute("SELECT * FROM certificates ORDER BY issued_at, serial"):
                certs.setdefault(row["uuid"], []).append(row)
            rows = db.execute("SELECT * FROM envoys ORDER BY hostname, enrolled_at").fetchall()
        return [_envoy(r, certs.get(r["uuid"], [])) for r in rows]

    def revoke_envoy(self, envoy_uuid: str, now: float) -> EnvoyRecord | None:
        with self._txn() as db:
            changed = db.execute(
                "UPDATE envoys SET state = 'revoked', state_changed_at = ?"
                " WHERE uuid = ? AND state = 'active'",
                (now, envoy_uuid),
            ).rowcount
            db.execute(
                "UPDATE certificates SET revoked_at = ? WHERE uuid = ? AND revoked_at IS NULL",
                (now, envoy_uuid),
            )
            envoy = _envoy_or_none(db, envoy_uuid)
        if changed:
            self.generation += 1
        return envoy

    def admit(self, envoy_uuid: str, serial: int) -> EnvoyRecord:
        """The envoy a verified certificate names, if it is in good standing (the
        check-in rule, for the other envoy-facing endpoints); else ``Refusal(403)``."""
        with self._txn() as db:
            return _in_good_standing(db, envoy_uuid, serial)

    def checkin(self, envoy_uuid: str, serial: int, req: CheckinRequest, now: float) -> EnvoyRecord:
        """Record a check-in from the envoy the certificate names, if it is in good standing."""
        with self._txn() as db:
            envoy = _in_good_standing(db, envoy_uuid, serial)
            if req.filecast is not None:
                filecast_db.replace_progress(db, envoy_uuid, req.filecast, now)
            db.execute(
                "UPDATE envoys SET last_checkin = ?, addresses = ?, port = ?,"
                " manifest_version = ?, reported_hostname = ? WHERE uuid = ?",
                (
                    now,
                    json.dumps(list(req.addresses)),
                    req.port,
                    req.manifest_version,
                    req.hostname,
                    envoy_uuid,
                ),
            )
            updated = _envoy_or_none(db, envoy_uuid)
        assert updated is not None
        if (envoy.addresses, envoy.port, envoy.last_checkin is None) != (
            updated.addresses,
            updated.port,
            False,
        ):
            self.generation += 1
        return updated


def _in_good_standing(db: sqlite3.Connection, envoy_uuid: str, serial: int) -> EnvoyRecord:
    envoy = _envoy_or_none(db, envoy_uuid)
    if envoy is None or serial_hex(serial) not in envoy.serials:
        raise Refusal(403, "not_enrolled", f"envoy {envoy_uuid} is not enrolled here")
    if envoy.state != "active":
        raise Refusal(403, "revoked", f"envoy {envoy_uuid} ({envoy.hostname}) is {envoy.state}")
    if serial_hex(serial) in envoy.revoked_serials:
        raise Refusal(403, "revoked", f"certificate {serial_hex(serial)} is revoked")
    return envoy


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        secret_sha256=row["secret_sha256"],
        description=row["description"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        max_uses=row["max_uses"],
        uses=row["uses"],
        revoked_at=row["revoked_at"],
    )


def _token_or_none(db: sqlite3.Connection, token_id: str) -> TokenRecord | None:
    row = db.execute("SELECT * FROM join_tokens WHERE id = ?", (token_id,)).fetchone()
    return None if row is None else _token(row)


def _envoy(row: sqlite3.Row, certs: list[sqlite3.Row]) -> EnvoyRecord:
    return EnvoyRecord(
        uuid=row["uuid"],
        hostname=row["hostname"],
        state=row["state"],
        enrolled_at=row["enrolled_at"],
        token_id=row["token_id"],
        last_checkin=row["last_checkin"],
        addresses=tuple(json.loads(row["addresses"])),
        port=row["port"],
        manifest_version=row["manifest_version"],
        reported_hostname=row["reported_hostname"],
        state_changed_at=row["state_changed_at"],
        replaced_by=row["replaced_by"],
        serials=tuple(c["serial"] for c in certs),
        revoked_serials=tuple(c["serial"] for c in certs if c["revoked_at"] is not None),
    )


def _envoy_or_none(db: sqlite3.Connection, envoy_uuid: str) -> EnvoyRecord | None:
    row = db.execute("SELECT * FROM envoys WHERE uuid = ?", (envoy_uuid,)).fetchone()
    if row is None:
        return None
    certs = db.execute(
        "SELECT * FROM certificates WHERE uuid = ? ORDER BY issued_at, serial", (envoy_uuid,)
    ).fetchall()
    return _envoy(row, certs)


class Database:
    """Runs ``Store`` calls in a worker thread, one at a time, without blocking trio."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[Store], T]) -> T:
        # Not abandoned on cancel: a transaction, once started, finishes or rolls back.
        return await trio.to_thread.run_sync(fn, self.store, limiter=self._limiter)

    def close(self) -> None:
        self.store.close()
