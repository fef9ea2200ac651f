"""filecast on an envoy: make ``files/<target>`` follow the manifest's live records.

``plan`` is pure: from the live records, the blobs held, and the symlinks present, it
says what to fetch, what to link, what to unlink and which blobs may be collected.
``FilecastService`` executes it whenever the manifest changes (and periodically):

- a record whose blob we lack → learn the blob's chunk list (from the seed dir on a
  seeder — a file named by its hash, or a sidecar's file found through ``seed_file`` —
  else from a peer) and check it against the *signed* record (sha256, size,
  chunk size, chunks digest) before fetching a single chunk; then fetch;
- a complete blob → materialize every target atomically (never outside ``files/``);
- a target no live record names (revoked, expired, replaced) → unlink it;
- blobs no live record references, unless pinned → garbage-collected.

Errors (a bad target, a full disk, no source yet) are per record: logged once, shown in
status, retried later; they never stop the service.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import diskfull, http11
from .blobinfo import info_from_peers
from .blobstore import BlobError, BlobInfo, BlobStore, StoreFull, read_info_beside
from .durable import NOFOLLOW
from .gossip import ManifestGossip
from .manifest import Record, RetentionKind
from .materialize import MaterializeError, is_blob_link, materialize, unmaterialize
from .node import SwarmNode
from .peers import PeerView
from .ratelimit import Limiter
from .transfer import BlobServer, Fetcher, FetchProgress, TransferConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ plan


@dataclass(frozen=True, slots=True)
class Plan:
    fetch: tuple[Record, ...]
    link: tuple[tuple[str, str], ...]  # (target, blob sha256)
    unlink: tuple[str, ...]
    referenced: frozenset[str]
    pinned: frozenset[str]


def live_filecast(records: Iterable[Record], now_unix: float) -> list[Record]:
    """Live filecast records: not tombstones, not expired."""
    live = []
    for r in records:
        if r.tombstone or not r.key.startswith("filecast/"):
            continue
        ret = r.retention
        if ret.kind is RetentionKind.EXPIRES_AT and (ret.expires_at_unix or 0) <= now_unix:
            continue
        live.append(r)
    return live


def plan(live: Iterable[Record], complete: set[str], links: Mapping[str, str]) -> Plan:
    """Pure: the actions that make ``links`` (target → blob) match ``live``."""
    want: dict[str, str] = {}
    fetch: dict[str, Record] = {}
    pinned: set[str] = set()
    for rec in sorted(live, key=lambda r: (r.hlc, r.origin)):  # newest last: it wins a target
        for target in rec.targets:
            want[target] = rec.blob
        if rec.blob not in complete:
            fetch[rec.blob] = rec
        if rec.retention.kind is RetentionKind.PINNED:
            pinned.add(rec.blob)
    link = tuple(sorted((t, b) for t, b in want.items() if b in complete and links.get(t) != b))
    unlink = tuple(sorted(t for t in links if t not in want))
    # A target being replaced keeps pointing at its old blob until the new one is
    # complete (then it is swapped atomically): the old blob stays referenced till then,
    # so the link is the old file or the new one, never dangling.
    held = {links[t] for t, b in want.items() if t in links and b not in complete}
    referenced = frozenset(want.values()) | held
    return Plan(tuple(fetch.values()), link, unlink, referenced, frozenset(pinned))


def settled_state(
    blob: str, targets: Iterable[str], complete: set[str], links: Mapping[str, str]
) -> str | None:
    """Pure: the state the facts on disk give a blob — ``materialized`` when it is complete
    and every target of its record links to it, ``complete`` when only held — or None
    while it is not complete (its fetch then owns the state: missing, partial, error)."""
    if blob not in complete:
        return None
    return "materialized" if all(links.get(t) == blob for t in targets) else "complete"


def matches_record(info: BlobInfo, rec: Record) -> str | None:
    """Why a chunk list does not fit the signed record, or None when it does."""
    if info.sha256 != rec.blob:
        return "its hash differs from the record's"
    if info.size_bytes != rec.size_bytes:
        return f"its size {info.size_bytes} differs from the record's {rec.size_bytes}"
    if info.chunk_bytes != rec.chunk_bytes:
        return "its chunk size differs from the record's"
    if info.chunks_digest != rec.chunks_digest:
        return "its chunk list is not the one the record signed"
    return None


def fetch_summary(p: FetchProgress, started: float) -> str:
    """One line for the log: how much came from how many peers, how fast."""
    took = max(trio.current_time() - started, 1e-6)
    mib = p.bytes_in / (1 << 20)
    return (
        f"blob {p.sha256[:12]} complete: {mib:.1f} MiB fetched in {took:.2f} s "
        f"({p.bytes_in * 8 / took / 1e6:.0f} Mbit/s) from {len(p.sources)} peers, "
        f"{p.bad_chunks} bad chunks"
    )


# --------------------------------------------------------------------------- service


@dataclass(slots=True)
class BlobState:
    sha256: str
    targets: tuple[str, ...]
    state: str = "missing"  # missing | partial | complete | materialized | error
    error: str = ""
    progress: FetchProgress | None = None

    def view(self) -> dict[str, Any]:
        p = self.progress
        return {
            "blob": self.sha256,
            "targets": list(self.targets),
            "state": self.state,
            "error": self.error,
            "have_chunks": p.have_chunks if p else (1 if self.state != "missing" else 0),
            "total_chunks": p.total_chunks if p else 1,
            "sources": dict(p.sources) if p else {},
            "bad_chunks": p.bad_chunks if p else 0,
        }


@dataclass(slots=True)
class FilecastService:
    node: SwarmNode
    gossip: ManifestGossip
    root: Path  # <state>/swarm
    seed_dirs: tuple[Path, ...] = ()
    seed_file: Callable[[str], Path | None] | None = None  # blob → a seeder's sidecar file
    transfer: TransferConfig = field(default_factory=TransferConfig)
    serve_limit: Limiter | None = None  # optional cap on what we upload to peers
    rescan_s: float = 2.0
    store: BlobStore = field(init=False)
    blob_server: BlobServer = field(init=False)
    blobs: dict[str, BlobState] = field(default_factory=dict)
    _fetching: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.store = BlobStore(self.root)
        self.blob_server = BlobServer(self.node, self.store, serve_limit=self.serve_limit)

    @property
    def files_root(self) -> Path:
        return self.root / "files"

    def current_links(self) -> dict[str, str]:
        """target → blob for every symlink of ours under files/ (never followed)."""
        links: dict[str, str] = {}
        base = self.files_root
        if not base.is_dir():
            return links
        for dirpath, _dirs, names in os.walk(base, followlinks=False):
            for name in names:
                path = Path(dirpath) / name
                if path.is_symlink():
                    text = os.readlink(path)
                    if is_blob_link(text):
                        links[str(path.relative_to(base))] = Path(text).name
        return links

    def status(self) -> list[dict[str, Any]]:
        return [b.view() for b in self.blobs.values()]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.files_root.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                changed = self.gossip.changed
                await self.reconcile(nursery)
                with trio.move_on_after(self.rescan_s):
                    await changed.wait()

    async def reconcile(self, nursery: trio.Nursery) -> None:
        live = live_filecast(self.gossip.manifest.records(), time.time())
        complete = {r.blob for r in live if self.store.blob_path(r.blob) is not None}
        links = await trio.to_thread.run_sync(self.current_links)
        todo = plan(live, complete, links)
        targets: dict[str, tuple[str, ...]] = {}  # blob → every target naming it
        for r in live:
            targets[r.blob] = tuple(dict.fromkeys((*targets.get(r.blob, ()), *r.targets)))
        self.blobs = {b: self.blobs.get(b) or BlobState(b, t) for b, t in targets.items()}
        for blob, state in self.blobs.items():
            state.targets = targets[blob]
        for rec in todo.fetch:
            if rec.blob not in self._fetching:
                self._fetching.add(rec.blob)
                nursery.start_soon(self._obtain, rec)
        refused: set[str] = set()
        for target, blob in todo.link:
            if await self._link(target, blob):
                links[target] = blob
            else:
                refused.add(blob)
        for target in todo.unlink:
            try:
                await trio.to_thread.run_sync(unmaterialize, self.files_root, target)
                log.info("filecast: removed %s (no live record names it)", target)
                del links[target]
            except (MaterializeError, OSError) as exc:
                log.warning("filecast: cannot remove %s: %s", target, exc)
        # Each pass settles every held blob's state from what is on disk, so a state a
        # fetch set from a stale plan (a second fetch begun just before the first one's
        # blob was linked) lasts one pass at most.
        for blob, state in self.blobs.items():
            settled = settled_state(blob, state.targets, complete, links)
            if settled is not None and blob not in refused:
                state.state, state.error = settled, ""
        collected = await trio.to_thread.run_sync(self.store.gc, todo.referenced, todo.pinned)
        for blob in collected:
            self.blob_server.forget(blob)
            log.info("filecast: collected unreferenced blob %s", blob[:12])

    async def _link(self, target: str, blob: str) -> bool:
        """Point ``target`` at the complete ``blob``; on a refusal the blob's state says why."""
        path = self.store.blob_path(blob)
        state = self.blobs.get(blob)
        if path is None or state is None:
            return False
        try:
            await trio.to_thread.run_sync(materialize, self.files_root, target, path)
        except (MaterializeError, ValueError, OSError) as exc:
            state.state, state.error = "error", f"{target}: {exc}"
            log.warning("filecast: refused to materialize %s: %s", target, exc)
            return False
        log.info("filecast: %s -> blob %s", target, blob[:12])
        return True

    async def _obtain(self, rec: Record) -> None:
        state = self.blobs.setdefault(rec.blob, BlobState(rec.blob, rec.targets))
        try:
            while True:
                if self.store.blob_path(rec.blob) is not None:
                    break  # held already (a plan made before the last fetch ended)
                if await self._from_seed_dir(rec):
                    break
                ready: dict[uuid.UUID, http11.HTTPSConnection] = {}
                info = await self._info_from_peers(rec, ready)
                if info is None:
                    state.error = "no source holds this blob yet"
                    await trio.sleep(self.rescan_s)
                    continue
                fetcher = Fetcher(self.node, self.store, info, self.transfer, ready=ready)
                state.state, state.error, state.progress = "partial", "", fetcher.progress
                full: StoreFull | None = None
                started = trio.current_time()
                log.info(
                    "filecast: fetching blob %s (%d chunks, %d held) for %s",
                    rec.blob[:12],
                    info.num_chunks,
                    fetcher.progress.have_chunks,
                    ", ".join(rec.targets),
                )
                try:
                    await fetcher.fetch()
                except* StoreFull as group:  # raised inside the fetch's nurseries
                    full = diskfull.first_leaf(group)
                if full is None:
                    log.info("filecast: %s", fetch_summary(fetcher.progress, started))
                    break
                # disk full: nothing partial is visible, verified chunks are kept; say
                # what is full and by how much, and resume once space is back
                report = await trio.to_thread.run_sync(diskfull.assess, self.store, info, full)
                state.state, state.error = "error", report.message()
                log.warning("filecast: %s", state.error)
                await diskfull.wait_for_space(report)
            # The reconcile loop may have linked the blob already (it sees it complete
            # from the moment it is renamed into place, before fetch() returns).
            if state.state != "materialized":
                state.state = "complete"
            state.error = ""
            self.gossip.notify_changed()  # reconcile now: materialize
        except* BlobError as group:
            state.state, state.error = "error", str(diskfull.first_leaf(group))
            log.warning("filecast: blob %s: %s", rec.blob[:12], state.error)
        except* Exception as group:  # last line of defence: one blob never stops the daemon
            state.state, state.error = "error", f"internal error: {diskfull.first_leaf(group)!r}"
            log.error("filecast: fetching %s failed unexpectedly", rec.blob[:12], exc_info=group)
        finally:
            self._fetching.discard(rec.blob)

    async def _from_seed_dir(self, rec: Record) -> bool:
        candidates = [seed / rec.blob for seed in self.seed_dirs]
        named = self.seed_file(rec.blob) if self.seed_file is not None else None
        if named is not None:  # a NAME + NAME.swarm pair (vigo_agent.sidecars)
            candidates.append(named)
        for path in candidates:
            seed = path.parent
            if path.is_file():
                described = await trio.to_thread.run_sync(read_info_beside, path)
                if described is not None and matches_record(described, rec) is None:
                    try:
                        await self._seed_in_place(path, described)
                    except BlobError as exc:  # verified chunks stay in the partial blob
                        self.blob_server.forget(rec.blob)
                        log.warning("filecast: seed file %s refused: %s", path, exc)
                        continue
                    return True
                try:
                    info = await trio.to_thread.run_sync(self.store.add_file, path, rec.chunk_bytes)
                except BlobError as exc:
                    log.warning("filecast: seed file %s refused: %s", path, exc)
                    continue
                problem = matches_record(info, rec)
                if problem is not None:  # the seed dir changed under the record: refuse
                    await trio.to_thread.run_sync(self.store.delete, info.sha256)
                    log.warning("filecast: seed file %s refused: %s", path, problem)
                    continue
                self.blob_server.superseed(info)  # we originate it: each chunk out once
                log.info("filecast: seeding %s from %s", rec.blob[:12], seed)
                return True
        return False

    async def _seed_in_place(self, path: Path, info: BlobInfo) -> None:
        """Seed a file whose chunk list lies beside it (the server lite's seed directory):
        copy it into a partial blob chunk by chunk, each verified on the way in, and
        serve every chunk from the moment it is in, so receivers start while the copy
        goes on. Raises BlobError (ChunkMismatch: the file is not the blob it claims)."""
        partial = await trio.to_thread.run_sync(self.store.begin, info)
        self.blob_server.superseed(info)  # we originate it: each chunk out once
        log.info("filecast: seeding %s from %s", info.sha256[:12], path.parent)
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | NOFOLLOW)
        try:
            for index in partial.missing():
                if await trio.to_thread.run_sync(partial.copy_chunk_from, fd, index):
                    self.blob_server.board.bump(info.sha256)  # receivers may ask for it
        finally:
            os.close(fd)
        await trio.to_thread.run_sync(partial.complete)
        self.blob_server.board.bump(info.sha256)

    async def _info_from_peers(
        self, rec: Record, ready: dict[uuid.UUID, http11.HTTPSConnection]
    ) -> BlobInfo | None:
        """The chunk list from the first peer whose list fits the signed record; a peer
        without the blob holds the question until it has it (blobinfo.py). The
        connections that ended at an answer are left in ``ready`` for the fetch."""

        def mismatch(peer: PeerView, why: str) -> None:
            log.warning(
                "filecast: peer %s offered a chunk list for %s that %s",
                peer.uuid,
                rec.blob[:12],
                why,
            )

        return await info_from_peers(
            self.node,
            self.node.peers(),
            rec.blob,
            lambda info: matches_record(info, rec),
            mismatch,
            wait_s=self.transfer.have_wait_s,
            keep=ready,
        )
