"""The filecast status view: every live record by every active envoy. Pure (no IO).

An envoy reports, at each check-in, one ``Progress`` per blob it knows of (the whole
list; the latest check-in wins). A record's state on an envoy is that envoy's report
for the record's blob, or ``unknown`` when the envoy has not reported that blob (it
never reported, or has not learned the record yet). A record is ``done`` when every
active envoy reports it ``materialized``; the whole view is done when every live record
is (so with no live records, or no active envoys, there is nothing to wait for).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vigo_swarm.manifest import Record

from .filecast import PROGRESS_STATES, Progress, num_chunks
from .filecast_seeded import Source, source_json
from .registry import EnvoyRecord

STATES: tuple[str, ...] = ("unknown", *PROGRESS_STATES)


@dataclass(frozen=True, slots=True)
class Reported:
    """A progress item with the time (server clock) of the check-in that carried it."""

    progress: Progress
    reported_at: float


ProgressTable = Mapping[str, Mapping[str, Reported]]  # envoy uuid -> blob -> report


def _counts(states: Iterable[str]) -> dict[str, int]:
    counted = Counter(states)
    return {state: counted.get(state, 0) for state in STATES}


def _envoy_row(
    envoy: EnvoyRecord, record: Record, report: Reported | None, server_version: int
) -> dict[str, Any]:
    in_sync = None if envoy.manifest_version is None else envoy.manifest_version == server_version
    row: dict[str, Any] = {
        "uuid": envoy.uuid,
        "hostname": envoy.hostname,
        "state": "unknown",
        "have_chunks": 0,
        "total_chunks": num_chunks(record),
        "error": None,
        "reported_at": None,
        "last_checkin": envoy.last_checkin,
        "manifest_in_sync": in_sync,
    }
    if report is not None:
        p = report.progress
        row |= {
            "state": p.state,
            "have_chunks": p.have_chunks,
            "total_chunks": p.total_chunks,
            "error": p.error,
            "reported_at": report.reported_at,
        }
    return row


def build_status(
    live: Iterable[Record],
    envoys: Iterable[EnvoyRecord],
    progress: ProgressTable,
    *,
    server_version: int,
    now: float,
    sources: Mapping[str, Source] | None = None,
) -> dict[str, Any]:
    """The answer of ``GET /api/v1/swarm/filecast/status``.

    ``live`` holds the live add records (see ``filecast.is_live``); only ``active``
    envoys of ``envoys`` are listed, sorted by hostname.
    """
    active = sorted((e for e in envoys if e.state == "active"), key=lambda e: (e.hostname, e.uuid))
    records: list[dict[str, Any]] = []
    everything: list[str] = []
    for record in sorted(live, key=lambda r: (r.targets[0] if r.targets else "", r.key)):
        rows = [
            _envoy_row(e, record, progress.get(e.uuid, {}).get(record.blob), server_version)
            for e in active
        ]
        states = [row["state"] for row in rows]
        everything += states
        records.append(
            {
                "key": record.key,
                "target": record.targets[0] if record.targets else None,
                "blob": record.blob,
                "size_bytes": record.size_bytes,
                "total_chunks": num_chunks(record),
                "hlc": record.hlc,
                "source": source_json((sources or {}).get(record.key), record.hlc),
                "envoys": rows,
                "counts": _counts(states),
                "done": all(s == "materialized" for s in states),
            }
        )
    return {
        "records": records,
        "totals": {
            "records": len(records),
            "envoys": len(active),
            "pairs": len(everything),
            "counts": _counts(everything),
            "done": all(r["done"] for r in records),
        },
        "manifest_version": server_version,
        "server_time": now,
    }
