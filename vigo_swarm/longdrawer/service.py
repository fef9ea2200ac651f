"""LongdrawerService: each local person's ``~/longdrawer/`` kept in sync with their
other envoys, over the swarm's mTLS peer channel.

    LongdrawerService                 (started with nursery.start by the daemon)
    ├── MulticastDiscovery            224.0.0.43:1532: our people's ids and seqs
    ├── PartnerFinder                 mTLS hellos that confirm partners (partners.py)
    ├── people loop                   finds ~/longdrawer/ folders (passwd), starts/stops:
    │   └── per person
    │       ├── watcher               watchfiles → scan the changed paths
    │       ├── rescan loop           full scan every rescan_interval_s; blob GC
    │       ├── sync loop             pull index changes from each partner (Puller,
    │       │                         puller.py); apply them (Applier, apply.py)
    │       ├── notifier              tell the partners our index changed
    │       └── cross-subnet loop     confirm ~/.longdrawer/config.yaml's peers
    └── peer-channel routes           /longdrawer/v1/… (PeerRoutes, routes.py)

The per-person and per-partner state is in state.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from .. import http11
from ..blobstore import BlobError, BlobStore
from ..discovery import DiscoveryConfig, MulticastDiscovery
from ..node import SwarmNode
from ..transfer import TransferConfig
from .announce import Announcement, decode, person_key, split
from .apply import Applier
from .config import LongdrawerConfig, PersonConfig, PersonConfigError, load_person_config
from .folder import Folder, FolderError, ScanResult, read_person_file
from .partners import PartnerFinder
from .paths import IGNORE_FILE, IgnoreRules, depth
from .puller import Puller
from .routes import HELLO_PATH, PREFIX, PeerRoutes
from .state import Partner, PersonSync, find_people
from .store import IndexStore, IndexStoreError

log = logging.getLogger(__name__)

MAX_WATCH_PATHS = 256  # more changed paths in one batch: one full scan instead


def _ca_der(ca_file: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(ca_file.read_bytes()).public_bytes(Encoding.DER)


class LongdrawerService:
    def __init__(self, node: SwarmNode, state_dir: Path, config: LongdrawerConfig) -> None:
        self.node = node
        self.config = config
        self.envoy = str(node.identity.uuid)
        root = state_dir / "longdrawer"
        self.store = BlobStore(root)
        self.index = IndexStore(root / "index.db")
        self.key = person_key(_ca_der(node.identity.ca_file))
        self.transfer = TransferConfig(refresh_have_s=0.1, idle_wait_s=0.05)
        self.people: dict[str, PersonSync] = {}
        self._discovery: MulticastDiscovery[Announcement] | None = None
        self._round = 0
        self.partners = PartnerFinder(node, self.people, self.index, config)
        self.routes = PeerRoutes(self.people, self.index, self.store)
        applier = Applier(self.index, self.store, self._scan_locked, self._after_change)
        self.puller = Puller(node, self.index, self.store, self.transfer, applier)
        node.router.add("POST", HELLO_PATH, self.partners.hello, max_body=64 << 10)
        self.routes.add_to(node.router)

    def close(self) -> None:
        self.index.close()

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:
            await nursery.start(self.partners.run)
            if self.node.config.multicast_enabled:
                self._discovery = MulticastDiscovery(
                    DiscoveryConfig(
                        group=cfg.group,
                        port=cfg.port,
                        interface_address=cfg.interface_address,
                        announce_interval_s=cfg.announce_interval_s,
                    ),
                    self._announcement,
                    self.partners.on_announcement,
                    decode,
                )
                await nursery.start(self._discovery.run)
            await self._refresh_people(nursery)
            nursery.start_soon(self._people_loop, nursery)
            task_status.started()

    async def _people_loop(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(self.config.people_interval_s)
            await self._refresh_people(nursery)

    async def _refresh_people(self, nursery: trio.Nursery) -> None:
        found = await trio.to_thread.run_sync(find_people, self.config.home_root, self.key)
        current = {p.pid: p for p in found}
        for pid, ps in list(self.people.items()):
            if pid not in current or current[pid] != ps.person:
                log.info("longdrawer: %s's folder is gone; stopped syncing it", ps.person.login)
                ps.scope.cancel()
                del self.people[pid]
        for pid, person in current.items():
            if pid not in self.people:
                folder = Folder(person, self.envoy, self.store, self.config.chunk_bytes)
                ps = self.people[pid] = PersonSync(person, folder)
                await nursery.start(self._person_task, ps)

    async def _person_task(
        self, ps: PersonSync, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with ps.scope:
            log.info("longdrawer: syncing %s (%s)", ps.person.login, ps.person.root)
            async with trio.open_nursery() as nursery:
                await self._load_settings(ps)
                await self._scan(ps, [""])
                nursery.start_soon(self._watch, ps)
                nursery.start_soon(self._rescan_loop, ps)
                nursery.start_soon(self._sync_loop, ps)
                nursery.start_soon(self.partners.cross_subnet_loop, ps)
                nursery.start_soon(self._notifier, ps, nursery)
                task_status.started()
        task_status.started()  # cancelled before it was ready: the caller still returns

    # ------------------------------------------------------------ discovery

    def _announcement(self) -> Announcement:
        seqs = {pid: self.index.state(pid)[1] for pid in self.people}
        datagrams = split(self.node.identity.uuid, self.node.port, seqs)
        self._round += 1
        return datagrams[self._round % len(datagrams)]

    def announce_soon(self) -> None:
        if self._discovery is not None:
            self._discovery.poke()

    # ------------------------------------------------------------- scanning

    async def _load_settings(self, ps: PersonSync) -> None:
        person = ps.person
        try:
            raw = await trio.to_thread.run_sync(
                read_person_file, person, ["longdrawer"], IGNORE_FILE
            )
            ps.rules = IgnoreRules.parse(raw.decode("utf-8", "replace")) if raw else IgnoreRules()
            raw = await trio.to_thread.run_sync(
                read_person_file, person, [".longdrawer"], "config.yaml"
            )
            ps.config = (
                load_person_config(raw, "~/.longdrawer/config.yaml") if raw else PersonConfig()
            )
        except (FolderError, PersonConfigError) as exc:
            ps.stats.last_error = str(exc)
            log.warning("longdrawer: %s: %s", person.login, exc)

    async def _scan(self, ps: PersonSync, paths: Iterable[str]) -> None:
        async with ps.lock:
            await self._scan_locked(ps, paths)

    async def _scan_locked(self, ps: PersonSync, paths: Iterable[str]) -> None:
        pid, folder, rules = ps.person.pid, ps.folder, ps.rules

        def work() -> ScanResult:
            index = self.index.all(pid)
            total = ScanResult()
            for under in _outermost(paths):
                part = folder.scan(index, rules, under)
                total.changed += part.changed
                total.disk_only += part.disk_only
                total.changing += part.changing
                total.skipped += part.skipped
            for path, sig in total.disk_only:
                self.index.set_disk(pid, path, sig)
            if total.changed:
                self.index.put(pid, total.changed)
            return total

        try:
            result = await trio.to_thread.run_sync(work)
        except (FolderError, IndexStoreError, BlobError) as exc:
            ps.stats.last_error = str(exc)
            log.warning("longdrawer: %s: %s", ps.person.login, exc)
            return
        ps.stats.scans += 1
        ps.changing, ps.skipped = result.changing, result.skipped
        if result.changed:
            ps.stats.local_changes += len(result.changed)
            await self._after_change(ps)

    async def _after_change(self, ps: PersonSync) -> None:
        """The person's index changed: the notifier tells the partners (coalesced, so a
        batch of a thousand files makes one round of notifications, not a thousand)."""
        ps.changed.set()

    async def _notifier(self, ps: PersonSync, nursery: trio.Nursery) -> None:
        pid = ps.person.pid
        while True:
            await ps.changed.wait()
            ps.changed = trio.Event()
            try:
                ps.blobs = await trio.to_thread.run_sync(self.index.live_blobs, pid)
                _, seq = await trio.to_thread.run_sync(self.index.state, pid)
            except IndexStoreError as exc:
                ps.stats.last_error = str(exc)
                log.warning("longdrawer: %s: %s", ps.person.login, exc)
                continue
            self.announce_soon()
            for partner in list(ps.partners.values()):
                nursery.start_soon(self._notify, ps, partner, seq)

    async def _notify(self, ps: PersonSync, partner: Partner, seq: int) -> None:
        body = json.dumps({"seq": seq}).encode()
        with trio.move_on_after(5):
            try:
                async with await self.node.dial(partner.view()) as conn:
                    await conn.request("POST", f"{PREFIX}/{ps.person.pid}/notify", body=body)
            except http11.ClientError as exc:
                log.debug("longdrawer: notify %s failed: %s", partner.uuid, exc)

    async def _watch(self, ps: PersonSync) -> None:
        from watchfiles import awatch  # lazy: only with a folder to watch

        root = str(ps.person.root)
        # The watcher's thread checks this every step: set it the moment we are
        # cancelled, or shutdown would wait for the watcher's 5 s timeout.
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_when_cancelled, stop)
            await self._watch_until(ps, root, awatch, stop)
            nursery.cancel_scope.cancel()

    async def _watch_until(self, ps: PersonSync, root: str, awatch: Any, stop: trio.Event) -> None:
        async for changes in awatch(
            root,
            watch_filter=None,
            debounce=self.config.debounce_ms,
            step=5,
            recursive=True,
            ignore_permission_denied=True,
            stop_event=stop,
        ):
            rels = set()
            for _, raw in changes:
                rel = raw[len(root) + 1 :] if raw.startswith(root + "/") else "."
                if rel == IGNORE_FILE:
                    await self._load_settings(ps)
                    rels.add("")
                elif not rel.startswith(".."):
                    rels.add("" if rel == "." else rel)
            if len(rels) > MAX_WATCH_PATHS:
                rels = {""}
            await self._scan(ps, rels)

    async def _rescan_loop(self, ps: PersonSync) -> None:
        while True:
            await trio.sleep(self.config.rescan_interval_s)
            await self._load_settings(ps)
            await self._scan(ps, [""])
            await self._collect_garbage()

    async def _collect_garbage(self) -> None:
        pinned = set().union(*(ps.fetching for ps in self.people.values()))
        try:
            referenced = await trio.to_thread.run_sync(self.index.referenced_blobs)
            await trio.to_thread.run_sync(self.store.gc, referenced, pinned)
        except (IndexStoreError, BlobError) as exc:
            log.warning("longdrawer: blob collection failed: %s", exc)

    # ---------------------------------------------------------------- syncing

    async def _sync_loop(self, ps: PersonSync) -> None:
        last_full = trio.current_time()
        while True:
            with trio.move_on_after(self.config.pull_interval_s):
                await ps.wake.wait()
            ps.wake = trio.Event()
            now = trio.current_time()
            full = now - last_full >= self.config.pull_interval_s
            if full:
                last_full = now
            self.partners.expire(ps, now)
            for partner in list(ps.partners.values()):
                if partner.dirty or full:
                    await self.puller.pull(ps, partner)

    # ----------------------------------------------------------------- status

    def status(self, uid: int | None) -> list[dict[str, Any]]:
        """Per person; ``uid`` None = everyone (root)."""
        now = trio.current_time()
        out = []
        for ps in self.people.values():
            if uid is not None and ps.person.uid != uid:
                continue
            _, seq = self.index.state(ps.person.pid)
            peers = [
                {
                    "uuid": str(p.uuid),
                    "hostname": p.hostname,
                    "address": p.address,
                    "via": p.via,
                    "their_seq": p.announced_seq,
                    "pulled_seq": p.pulled_seq,
                    "in_sync": p.pulled_seq >= p.announced_seq and not p.dirty,
                    "last_pull_age_s": None if p.last_pull is None else round(now - p.last_pull, 1),
                    "last_error": p.last_error,
                }
                for p in ps.partners.values()
            ]
            out.append(
                {
                    "person": ps.person.login,
                    "folder": str(ps.person.root),
                    "seq": seq,
                    "peers": peers,
                    "in_sync": not ps.pending and all(p["in_sync"] for p in peers),
                    "pending_files": len(ps.pending),
                    "pending_bytes": sum(ps.pending.values()),
                    "index": self.index.counts(ps.person.pid),
                    "changing": ps.changing[:20],
                    "skipped": ps.skipped[:20],
                    **dataclasses.asdict(ps.stats),
                    # with the bytes of fetches still running (a kill -9 test reads it)
                    "bytes_fetched": ps.stats.bytes_fetched
                    + sum(f.progress.bytes_in for f in ps.fetchers),
                }
            )
        return out


async def _set_when_cancelled(event: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        event.set()


def _outermost(paths: Iterable[str]) -> list[str]:
    """Drop paths below another path in the set ("" covers everything)."""
    ordered = sorted(set(paths), key=lambda p: (depth(p), p))
    kept: list[str] = []
    for path in ordered:
        if "" in kept:
            break
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept
