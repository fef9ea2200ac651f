"""Manifest gossip: keep every envoy's manifest equal, over the peer channel.

Triggers (the decisions are in ``peers_to_sync``, pure):
- a confirmed peer whose announced or probed manifest version differs from ours
  (multicast carries ``mv``), at most once per ``min_gap_s`` per peer;
- every ``anti_entropy_interval_s``, a push-pull with one random confirmed peer, which
  repairs anything multicast missed.

Exchange (1.5 round trips, see docs/manifest.md):
``POST /swarm/v1/manifest/sync {"summary": …}`` → ``{"records": [what we lack],
"want": [keys they lack]}``; then ``POST /swarm/v1/manifest/push {"records": […]}``.
Every record is verified against the operator authority before it is merged; a record
an ordinary envoy signed, a forged or far-future one is refused and counted, and the
rest of the batch still merges. A batch the database cannot store (a full disk) is not
merged at all, in memory neither; it is logged and counted, and the next sync offers it
again.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from . import http11
from .manifest import (
    MalformedSummary,
    Manifest,
    Record,
    RecordRejected,
    from_wire,
    summary_from_wire,
    summary_to_wire,
    to_wire,
)
from .manifest_store import ManifestStore, ManifestStoreError
from .node import SwarmNode
from .peers import PeerView

log = logging.getLogger(__name__)

SYNC_PATH = "/swarm/v1/manifest/sync"
PUSH_PATH = "/swarm/v1/manifest/push"
MAX_BODY = 64 << 20
MAX_RECORDS_PER_MESSAGE = 100_000


@dataclass(frozen=True, slots=True)
class GossipConfig:
    min_gap_s: float = 1.0
    anti_entropy_interval_s: float = 10.0
    tick_s: float = 0.25


@dataclass(slots=True)
class GossipStats:
    syncs: int = 0
    sync_failures: int = 0
    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    last_rejection: str = ""
    store_errors: int = 0
    last_store_error: str = ""


def peers_to_sync(
    peers: Iterable[PeerView],
    version: int,
    last_sync: Mapping[Any, float],
    now: float,
    min_gap_s: float,
) -> list[PeerView]:
    """Pure: confirmed peers whose known version differs from ours and are not too recent."""
    return [
        p
        for p in peers
        if p.confirmed
        and p.manifest_version is not None
        and p.manifest_version != version
        and now - last_sync.get(p.uuid, -1e18) >= min_gap_s
    ]


def decode_records(obj: Any) -> tuple[list[Record], list[str]]:
    """Strictly decode a list of wire records: (good ones, reasons for the bad ones)."""
    if not isinstance(obj, list) or len(obj) > MAX_RECORDS_PER_MESSAGE:
        raise MalformedSummary(f"records must be a list of at most {MAX_RECORDS_PER_MESSAGE}")
    good, bad = [], []
    for item in obj:
        try:
            good.append(from_wire(item))
        except RecordRejected as exc:
            bad.append(str(exc))
    return good, bad


class ManifestGossip:
    def __init__(
        self,
        node: SwarmNode,
        store: ManifestStore,
        config: GossipConfig | None = None,
        *,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.node = node
        self.store = store
        self.config = config or GossipConfig()
        self.now_ms = now_ms
        self.stats = GossipStats()
        self._last_sync: dict[Any, float] = {}
        self._lock = trio.Lock()  # one merge at a time: the store is one SQLite connection
        self.changed = trio.Event()  # set (and replaced) whenever new records merge
        node.router.add("POST", SYNC_PATH, self._sync_handler, max_body=MAX_BODY)
        node.router.add("POST", PUSH_PATH, self._push_handler, max_body=MAX_BODY)
        node.manifest_version = store.manifest.version

    @property
    def manifest(self) -> Manifest:
        return self.store.manifest

    async def merge(self, records: list[Record], source: str) -> int:
        """Merge verified records; returns how many changed our manifest."""
        async with self._lock:
            try:
                results = await trio.to_thread.run_sync(
                    self.store.merge_many, records, self.now_ms()
                )
            except ManifestStoreError as exc:  # undone whole; offered again by the next sync
                self.stats.store_errors += 1
                self.stats.last_store_error = str(exc)
                log.warning("could not store %d records from %s: %s", len(records), source, exc)
                return 0
        accepted = 0
        for res in results:
            if isinstance(res, RecordRejected):
                self.stats.rejected += 1
                self.stats.last_rejection = f"from {source}: {res}"
                log.warning("refused a manifest record from %s: %s", source, res)
            elif res.accepted:
                accepted += 1
        if accepted:
            self.stats.records_in += accepted
            self.node.manifest_version = self.manifest.version
            self.node.announce_soon()
            self.notify_changed()
        return accepted

    def notify_changed(self) -> None:
        """Wake everyone waiting on ``changed`` (new records, or local state they act on).

        The event is replaced after it fires, so a waiter that looks again waits for
        the next change instead of spinning on an event that stays set."""
        self.changed.set()
        self.changed = trio.Event()

    # ------------------------------------------------------------------ server side

    def _body(self, request: http11.Request) -> dict[str, Any]:
        obj = request.json()
        if not isinstance(obj, dict):
            raise http11.HTTPError(400, "bad_request", "body must be a JSON object")
        return obj

    async def _sync_handler(self, request: http11.Request) -> http11.Response:
        try:
            their = summary_from_wire(self._body(request).get("summary"))
        except MalformedSummary as exc:
            raise http11.HTTPError(400, "bad_summary", str(exc)) from exc
        missing = self.manifest.missing_for(their)
        self.stats.records_out += len(missing)
        return http11.json_response(
            {"records": [to_wire(r) for r in missing], "want": self.manifest.wanted_from(their)}
        )

    async def _push_handler(self, request: http11.Request) -> http11.Response:
        try:
            records, bad = decode_records(self._body(request).get("records"))
        except MalformedSummary as exc:
            raise http11.HTTPError(400, "bad_records", str(exc)) from exc
        source = str(request.peer.uuid) if request.peer else request.remote
        for reason in bad:
            self.stats.rejected += 1
            self.stats.last_rejection = f"from {source}: {reason}"
        accepted = await self.merge(records, source)
        return http11.json_response({"accepted": accepted, "rejected": len(bad)})

    # ------------------------------------------------------------------ client side

    async def sync_with(self, peer: PeerView) -> None:
        """One push-pull exchange with a confirmed peer."""
        self._last_sync[peer.uuid] = trio.current_time()
        self.stats.syncs += 1
        try:
            async with await self.node.dial(peer) as conn:
                body = json.dumps({"summary": summary_to_wire(self.manifest.summary())})
                resp = await conn.request("POST", SYNC_PATH, body=body.encode(), max_body=MAX_BODY)
                if resp.status != 200:
                    raise http11.ClientError(f"sync answered {resp.status}")
                answer = resp.json()
                if not isinstance(answer, dict):
                    raise http11.ClientError("sync answer is not an object")
                records, bad = decode_records(answer.get("records"))
                for reason in bad:
                    self.stats.rejected += 1
                    self.stats.last_rejection = f"from {peer.uuid}: {reason}"
                await self.merge(records, str(peer.uuid))
                want = answer.get("want")
                if isinstance(want, list) and want:
                    held = [
                        r
                        for key in want[:MAX_RECORDS_PER_MESSAGE]
                        if isinstance(key, str) and (r := self.manifest.get(key)) is not None
                    ]
                    push = json.dumps({"records": [to_wire(r) for r in held]}).encode()
                    await conn.request("POST", PUSH_PATH, body=push, max_body=MAX_BODY)
                    self.stats.records_out += len(held)
        except (http11.ClientError, MalformedSummary) as exc:
            self.stats.sync_failures += 1
            log.debug("manifest sync with %s failed: %s", peer.uuid, exc)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_random = trio.current_time() + self.config.anti_entropy_interval_s
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                peers = self.node.peers()
                due = peers_to_sync(
                    peers, self.manifest.version, self._last_sync, now, self.config.min_gap_s
                )
                if now >= next_random and peers:
                    due.append(random.choice(peers))
                    next_random = now + self.config.anti_entropy_interval_s
                for peer in {p.uuid: p for p in due}.values():
                    self._last_sync[peer.uuid] = now
                    nursery.start_soon(self.sync_with, peer)
                await trio.sleep(self.config.tick_s)
