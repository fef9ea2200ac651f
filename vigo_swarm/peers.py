"""The peer table: which envoys we may talk to, and how we learned of them.

Invariants (everything that changes the table lives in this file; it does no IO and
takes ``now`` — monotonic seconds — as an argument):

1. A *candidate* is a UUID + address learned from a hint (multicast or server). It is
   never a peer. A candidate becomes a *confirmed peer* only through ``probe_ok`` —
   the driver calls it after an mTLS handshake at that address whose verified
   certificate names that UUID.
2. A confirmed peer stays confirmed while a probe has succeeded within
   ``confirm_ttl_s``; hints alone refresh liveness (``last_hint``) but never confirm.
   Past ``confirm_ttl_s`` it is probed again; a peer neither hinted nor confirmed for
   ``expire_s`` is dropped.
3. Our own UUID and revoked UUIDs never enter the table.
4. Failed probes back off exponentially per (UUID, address), so spoofed announcements
   cannot make us hammer an address, and the table is bounded (``max_entries``):
   when full, the stalest unconfirmed candidate is evicted; confirmed peers are never
   evicted to make room for candidates.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field


class Source(enum.StrEnum):
    MULTICAST = "multicast"
    SERVER = "server"
    INBOUND = "inbound"  # it dialled us with a verified certificate (we still probe it)


@dataclass(frozen=True, slots=True)
class TableConfig:
    confirm_ttl_s: float = 60.0
    expire_s: float = 30.0
    probe_backoff_base_s: float = 1.0
    probe_backoff_max_s: float = 60.0
    max_entries: int = 4096


@dataclass(slots=True)
class _Address:
    last_hint: float
    port: int
    failures: int = 0
    next_probe: float = 0.0
    last_error: str = ""


@dataclass(slots=True)
class _Entry:
    uuid: uuid.UUID
    sources: set[Source] = field(default_factory=set)
    addresses: dict[str, _Address] = field(default_factory=dict)
    hostname: str | None = None
    confirmed_at: float | None = None
    confirmed_address: str | None = None
    first_confirmed_at: float | None = None
    manifest_version: int | None = None

    def last_activity(self) -> float:
        hints = [a.last_hint for a in self.addresses.values()]
        return max([*hints, self.confirmed_at or 0.0])


@dataclass(frozen=True, slots=True)
class Probe:
    uuid: uuid.UUID
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class PeerView:
    uuid: uuid.UUID
    hostname: str | None
    confirmed: bool
    address: str | None  # the address the last successful probe used
    port: int | None
    addresses: tuple[str, ...]
    sources: tuple[str, ...]
    confirmed_age_s: float | None
    last_error: str
    manifest_version: int | None


class PeerTable:
    def __init__(self, own_uuid: uuid.UUID, config: TableConfig | None = None) -> None:
        self.own_uuid = own_uuid
        self.config = config or TableConfig()
        self._entries: dict[uuid.UUID, _Entry] = {}
        self._revoked: set[uuid.UUID] = set()

    # ---------------------------------------------------------------- hints in

    def hint(
        self,
        peer: uuid.UUID,
        address: str,
        port: int,
        source: Source,
        now: float,
        *,
        manifest_version: int | None = None,
    ) -> bool:
        """Record a hint. Returns True when a probe is now due for it."""
        if peer == self.own_uuid or peer in self._revoked:
            return False
        entry = self._entries.get(peer)
        if entry is None:
            if len(self._entries) >= self.config.max_entries and not self._evict_one():
                return False
            entry = self._entries[peer] = _Entry(peer)
        entry.sources.add(source)
        if manifest_version is not None and entry.confirmed_at is not None:
            entry.manifest_version = manifest_version
        slot = entry.addresses.get(address)
        if slot is None:
            slot = entry.addresses[address] = _Address(last_hint=now, port=port)
        else:
            slot.last_hint = now
            if slot.port != port:
                slot.port, slot.failures, slot.next_probe = port, 0, 0.0
        return self._needs_probe(entry, now) and slot.next_probe <= now

    def _evict_one(self) -> bool:
        candidates = [e for e in self._entries.values() if e.confirmed_at is None]
        if not candidates:
            return False
        stalest = min(candidates, key=_Entry.last_activity)
        del self._entries[stalest.uuid]
        return True

    def _needs_probe(self, entry: _Entry, now: float) -> bool:
        return entry.confirmed_at is None or now - entry.confirmed_at >= self.config.confirm_ttl_s

    # --------------------------------------------------------------- probes

    def due_probes(self, now: float) -> list[Probe]:
        """One probe per entry that needs confirming: its least-failed due address."""
        probes = []
        for entry in self._entries.values():
            if not self._needs_probe(entry, now):
                continue
            due = [
                (a.failures, -a.last_hint, addr, a)
                for addr, a in entry.addresses.items()
                if a.next_probe <= now
            ]
            if due:
                _, _, addr, slot = min(due)
                slot.next_probe = now + self.config.probe_backoff_max_s  # in flight
                probes.append(Probe(entry.uuid, addr, slot.port))
        return probes

    def probe_ok(
        self, probe: Probe, now: float, *, hostname: str | None, manifest_version: int | None = None
    ) -> bool:
        """The handshake at probe.address showed probe.uuid. Returns True if newly confirmed."""
        entry = self._entries.get(probe.uuid)
        if entry is None or probe.uuid in self._revoked:
            return False
        newly = entry.confirmed_at is None
        entry.confirmed_at = now
        entry.first_confirmed_at = entry.first_confirmed_at or now
        entry.confirmed_address = probe.address
        entry.hostname = hostname
        if manifest_version is not None:
            entry.manifest_version = manifest_version
        slot = entry.addresses.get(probe.address)
        if slot is not None:
            slot.failures, slot.last_error = 0, ""
            slot.next_probe = now + self.config.confirm_ttl_s
        return newly

    def probe_failed(self, probe: Probe, now: float, reason: str) -> None:
        entry = self._entries.get(probe.uuid)
        if entry is None:
            return
        slot = entry.addresses.get(probe.address)
        if slot is not None:
            slot.failures += 1
            slot.last_error = reason
            delay = min(
                self.config.probe_backoff_max_s,
                self.config.probe_backoff_base_s * 2 ** (slot.failures - 1),
            )
            slot.next_probe = now + delay
        if entry.confirmed_address == probe.address:
            entry.confirmed_at = None  # it no longer answers as itself there

    # ------------------------------------------------------------- lifecycle

    def expire(self, now: float) -> list[uuid.UUID]:
        """Drop stale addresses and entries; returns the UUIDs removed."""
        gone = []
        for peer, entry in list(self._entries.items()):
            fresh_confirm = (
                entry.confirmed_at is not None
                and now - entry.confirmed_at < self.config.confirm_ttl_s
            )
            for addr, slot in list(entry.addresses.items()):
                if now - slot.last_hint >= self.config.expire_s and addr != entry.confirmed_address:
                    del entry.addresses[addr]
            recently_hinted = any(
                now - a.last_hint < self.config.expire_s for a in entry.addresses.values()
            )
            if not fresh_confirm and not recently_hinted:
                del self._entries[peer]
                gone.append(peer)
        return gone

    def revoke(self, uuids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
        """Forget revoked envoys now and refuse their hints from now on."""
        removed = []
        for peer in uuids:
            self._revoked.add(peer)
            if self._entries.pop(peer, None) is not None:
                removed.append(peer)
        return removed

    def is_revoked(self, peer: uuid.UUID) -> bool:
        return peer in self._revoked

    # ------------------------------------------------------------------ views

    def confirmed(self) -> list[uuid.UUID]:
        return [p for p, e in self._entries.items() if e.confirmed_at is not None]

    def snapshot(self, now: float) -> list[PeerView]:
        views = []
        for entry in sorted(self._entries.values(), key=lambda e: str(e.uuid)):
            confirmed_slot = entry.addresses.get(entry.confirmed_address or "")
            errors = [a.last_error for a in entry.addresses.values() if a.last_error]
            views.append(
                PeerView(
                    uuid=entry.uuid,
                    hostname=entry.hostname,
                    confirmed=entry.confirmed_at is not None,
                    address=entry.confirmed_address,
                    port=confirmed_slot.port if confirmed_slot else None,
                    addresses=tuple(sorted(entry.addresses)),
                    sources=tuple(sorted(entry.sources)),
                    confirmed_age_s=None
                    if entry.confirmed_at is None
                    else round(now - entry.confirmed_at, 3),
                    last_error=errors[-1] if errors else "",
                    manifest_version=entry.manifest_version,
                )
            )
        return views
