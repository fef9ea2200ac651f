"""The filecast authority: the server's own manifest, and the only signer of its records.

The server holds a ``ManifestStore`` at ``<data-dir>/swarm/manifest.db`` whose only
authority key is its own (``{"server": authority.pub}``), stamps with a hybrid logical
clock resumed above every stamp it holds, and signs with the fleet CA's authority key
(``FleetCA.sign_record``) — the key every envoy learned at enrollment.

Invariants:

1. Every record the server holds it signed itself: envoys can only *read* it (manifest
   sync answers ``want: []``; nothing an envoy sends is ever merged here).
2. A new record's stamp is above every stamp held (``HLC(start=max_hlc())``, one
   ``tick`` per record), so a distribution or revocation always wins its key by LWW.
3. Calls block (SQLite with fsync, Ed25519) and are serialized by one lock; the API
   runs them through ``trio.to_thread``. ``snapshot`` is replaced (never mutated) after
   each change, so the event loop reads it without the lock.
4. A record is signed only if its stamp is within the envoys' drift limit of the
   server's wall clock. A server clock that went back further than that (behind the
   newest stamp held) cannot publish until it is fixed: ``ClockBehind``, nothing changes.
5. The server never expires its tombstones: it is every envoy's origin of last resort,
   so an envoy offline for longer than the envoys' tombstone window still learns the
   revocation from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vigo_swarm.hlc import DEFAULT_MAX_DRIFT_MS, HLC, wall_ms_of
from vigo_swarm.manifest import (
    FarFutureRecord,
    MergeResult,
    Record,
    RecordFields,
    Retention,
    Stamp,
    sign,
    tombstone_fields,
)
from vigo_swarm.manifest_store import ManifestStore

log = logging.getLogger(__name__)

ORIGIN = "server"


class AuthorityError(Exception):
    """The server's own record was not accepted by its own manifest; nothing was
    published."""


class ClockBehind(AuthorityError):
    """The newest stamp held is further ahead of the wall clock than envoys accept."""

    def __init__(self, ahead_ms: int) -> None:
        self.ahead_ms = ahead_ms
        super().__init__(
            f"the server clock is {ahead_ms / 1000:.0f} s behind the newest manifest record: "
            "a new record would be refused by envoys as from the future. Fix the server's "
            "clock (or wait that long) and retry; nothing was changed"
        )


class DescribesBlob(Protocol):
    """What a record says about its blob: ``BlobInfo`` (an upload) and ``BlobFacts`` (a
    seeder's sidecar) both do."""

    @property
    def sha256(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def chunk_bytes(self) -> int: ...
    @property
    def chunks_digest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    records: tuple[Record, ...]  # every record held, tombstones too, sorted by key


class FilecastAuthority:
    def __init__(
        self,
        path: Path,
        authority_public_hex: str,
        signer: Callable[[bytes], bytes],
        now_ms: Callable[[], int],
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.store = ManifestStore(path, {ORIGIN: bytes.fromhex(authority_public_hex)})
        for problem in self.store.load_errors:  # e.g. the authority key was replaced
            log.warning("dropped a stored manifest record that no longer verifies: %s", problem)
        self._signer = signer
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self.hlc = HLC(now_ms, start=self.store.manifest.max_hlc())
        self.snapshot = self._take_snapshot()

    def close(self) -> None:
        self.store.close()

    @property
    def version(self) -> int:
        return self.store.manifest.version

    def _take_snapshot(self) -> Snapshot:
        manifest = self.store.manifest
        return Snapshot(manifest.version, tuple(manifest.records()))

    def check_clock(self) -> None:
        """Raise ClockBehind now if a record signed now would be (lock-free, a
        pre-check so an upload is not seeded for nothing; ``_publish`` decides)."""
        newest = max((r.hlc for r in self.snapshot.records), default=0)
        ahead = wall_ms_of(newest) - self._now_ms()
        if ahead > DEFAULT_MAX_DRIFT_MS:
            raise ClockBehind(ahead)

    def _publish(self, fields: RecordFields) -> MergeResult:
        record = sign(fields, self._signer)
        try:
            result = self.store.merge(record, self._now_ms())
        except FarFutureRecord as exc:
            raise ClockBehind(exc.ahead_ms) from exc
        if not result.accepted:
            raise AuthorityError(f"our own record for {record.key} was {result.outcome}")
        self.snapshot = self._take_snapshot()
        return result

    def distribute(
        self, key: str, target: str, retention: Retention, blob: DescribesBlob
    ) -> MergeResult:
        """Sign and merge the record of ``target`` (at ``key``) → ``blob``; ``previous`` in
        the result is the record it replaced (an older distribution or a tombstone)."""
        with self._lock:
            fields = RecordFields(
                key=key,
                blob=blob.sha256,
                size_bytes=blob.size_bytes,
                chunk_bytes=blob.chunk_bytes,
                chunks_digest=blob.chunks_digest,
                targets=(target,),
                retention=retention,
                tombstone=False,
                hlc=self.hlc.tick(),
                origin=ORIGIN,
            )
            return self._publish(fields)

    def revoke(self, key: str) -> MergeResult | None:
        """Sign and merge a tombstone for ``key``; None when no add record holds it."""
        with self._lock:
            held = self.store.manifest.get(key)
            if held is None or held.tombstone:
                return None
            return self._publish(tombstone_fields(key, hlc=self.hlc.tick(), origin=ORIGIN))

    def missing_for(self, their: Mapping[str, Stamp]) -> list[Record]:
        """What an envoy with summary ``their`` lacks (``Manifest.missing_for``)."""
        with self._lock:
            return self.store.manifest.missing_for(their)
