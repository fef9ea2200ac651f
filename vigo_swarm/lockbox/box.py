"""What the lockbox service keeps in memory: its settings (``LockboxConfig``), what it
has done (``LockboxStats``), and one puddle's lockbox on this envoy (``Box``)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ..transfer import TransferConfig
from .plan import Local
from .records import Entry, Record


@dataclass(frozen=True, slots=True)
class LockboxConfig:
    rescan_s: float = 30.0
    sync_interval_s: float = 15.0
    chunk_bytes: int = 1 << 20
    watch: bool = True
    watch_debounce_ms: int = 200
    request_timeout_s: float = 30.0
    transfer: TransferConfig = field(default_factory=TransferConfig)


@dataclass(slots=True)
class LockboxStats:
    passes: int = 0
    records_made: int = 0
    records_in: int = 0
    records_refused: int = 0
    files_written: int = 0
    files_removed: int = 0
    decrypt_failures: int = 0
    syncs: int = 0
    sync_failures: int = 0
    refusals: int = 0  # requests from non-members
    blobs_fetched: int = 0
    blobs_collected: int = 0


@dataclass(slots=True)
class Box:
    """One puddle's lockbox on this envoy."""

    puddle_hex: str
    uid: int
    records: dict[str, Record]
    members: frozenset[uuid.UUID] = frozenset()
    entries: dict[str, Entry] = field(default_factory=dict)  # decrypted; only while unlocked
    bad: set[str] = field(default_factory=set)  # records that failed to open (by id)
    local: dict[str, Local] | None = None  # the person's table, loaded on first use
    shown: int = 0
    conflicts: int = 0
    pending_writes: int = 0
    skipped_local: int = 0
    state: str = "locked"
    last_error: str = ""
    last_error_unix: float = 0.0
    last_sync_unix: float = 0.0

    def fail(self, message: str) -> None:
        self.last_error, self.last_error_unix = message, time.time()
