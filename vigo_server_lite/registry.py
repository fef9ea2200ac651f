"""The envoy registry's pure view: envoy records, peer hints and the revocation list.

Invariants (the database enforces the first with a partial unique index):

- at most one envoy per hostname is ``active``; enrolling a hostname again turns the
  previous record into ``replaced`` (``replaced_by`` names the new UUID);
- an envoy that is not ``active`` (``revoked`` or ``replaced``) has every certificate
  serial it ever held on the revocation list, and its UUID too: peers refuse both;
- an ``active`` envoy may still have individually revoked serials (``revoked_serials``);
- identity is the UUID from a verified certificate. A hostname reported at check-in is
  informational and never used to look anything up (Salt CVE-2016-9639).

Serials travel as lowercase hex without ``0x`` (``format(serial, "x")``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

EnvoyState = Literal["active", "revoked", "replaced"]


def serial_hex(serial: int) -> str:
    return format(serial, "x")


@dataclass(frozen=True, slots=True)
class EnvoyRecord:
    uuid: str
    hostname: str
    state: EnvoyState
    enrolled_at: float
    token_id: str | None
    last_checkin: float | None = None
    addresses: tuple[str, ...] = ()
    port: int | None = None
    manifest_version: int | None = None
    reported_hostname: str | None = None
    state_changed_at: float | None = None
    replaced_by: str | None = None
    serials: tuple[str, ...] = ()
    revoked_serials: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "hostname": self.hostname,
            "state": self.state,
            "enrolled_at": self.enrolled_at,
            "last_checkin": self.last_checkin,
            "addresses": list(self.addresses),
            "port": self.port,
            "manifest_version": self.manifest_version,
            "reported_hostname": self.reported_hostname,
            "state_changed_at": self.state_changed_at,
            "replaced_by": self.replaced_by,
            "serials": list(self.serials),
            "revoked_serials": sorted(self.revoked_serials_effective()),
            "token_id": self.token_id,
        }

    def revoked_serials_effective(self) -> set[str]:
        if self.state != "active":
            return set(self.serials)
        return set(self.revoked_serials)


@dataclass(frozen=True, slots=True)
class RevocationList:
    serials: frozenset[str] = frozenset()
    uuids: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[str]]:
        return {"serials": sorted(self.serials), "uuids": sorted(self.uuids)}


def revocation_list(envoys: Iterable[EnvoyRecord]) -> RevocationList:
    serials: set[str] = set()
    uuids: set[str] = set()
    for envoy in envoys:
        serials |= envoy.revoked_serials_effective()
        if envoy.state != "active":
            uuids.add(envoy.uuid)
    return RevocationList(frozenset(serials), frozenset(uuids))


@dataclass(frozen=True, slots=True)
class PeerHint:
    uuid: str
    hostname: str
    addresses: tuple[str, ...]
    port: int

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "hostname": self.hostname,
            "addresses": list(self.addresses),
            "port": self.port,
        }


@dataclass(frozen=True, slots=True)
class FleetView:
    """What every check-in answer is computed from; rebuilt only when the fleet changes."""

    hints: tuple[PeerHint, ...] = ()
    revoked: RevocationList = field(default_factory=RevocationList)

    def peers_for(self, envoy_uuid: str) -> list[dict[str, Any]]:
        return [h.to_json() for h in self.hints if h.uuid != envoy_uuid]


def fleet_view(envoys: Iterable[EnvoyRecord]) -> FleetView:
    """Peer hints are the active envoys that have checked in at least once."""
    records = list(envoys)
    hints = tuple(
        PeerHint(e.uuid, e.hostname, e.addresses, e.port)
        for e in sorted(records, key=lambda r: (r.hostname, r.uuid))
        if e.state == "active" and e.last_checkin is not None and e.port is not None
    )
    return FleetView(hints, revocation_list(records))
