"""lockbox on a running envoy: people's ``~/lockbox`` ⇄ encrypted records and blobs.

``LockboxService`` is started by the daemon with ``await nursery.start(service.run)``.
For every person with a puddle here (``PuddleService.index``), each pass:

1. scans ``~/lockbox`` (woken by watchfiles, and every ``rescan_s``) and turns local
   changes into records — encrypting new content to the puddle's *public* key, so
   this works while locked too (``plan.local_changes``);
2. while the puddle is unlocked here, decrypts the live records, computes the view
   and writes/removes plaintext (``plan.remote_changes``);
3. fetches the ciphertext blobs of live records it lacks — from member envoys only —
   and collects blobs no live record needs.

Peer channel (mutual TLS, TCP 1531; every route checks that the caller's certificate
UUID is in the puddle's signed member list, else 403 ``not_member``)::

    POST /swarm/v1/lockbox/sync {"puddle": hex, "ids": [record ids]}
         → {"records": [what the caller lacks], "want": [ids we lack]}
    POST /swarm/v1/lockbox/push {"puddle": hex, "records": [...]} → {"accepted": n}
    GET  /swarm/v1/blobs/<sha256>/{info,have,chunks/<i>}   for lockbox blobs: claimed
         ahead of filecast's routes and answered from lockbox's own blob store

Logs never carry a plaintext name or content: records are named by id, blobs by hash.

This module holds the pass itself (``run``, ``run_pass``, ``_reconcile``), watching and
``status``; the service's other parts are classes it inherits, one module each:
``local`` (step 1), ``remote`` (step 2), ``blobs`` (step 3), ``channel`` (the peer
channel), over ``core`` (shared fields and helpers) and ``box`` (config, stats, ``Box``).
The peer-channel paths and limits are re-exported here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..blobroutes import private_blob_router
from ..blobstore import BlobError, BlobStore
from ..node import SwarmNode
from ..puddle import PuddleError, PuddleKey, PuddleService
from . import files, records, state
from .blobs import BlobFetching
from .box import Box, LockboxConfig, LockboxStats
from .channel import (
    BLOB_BASE,
    MAX_BODY,
    MAX_RECORDS_PER_MESSAGE,
    PUSH_PATH,
    SYNC_PATH,
    PeerChannel,
)
from .errors import LockboxError
from .local import LocalChanges
from .remote import RemoteChanges

__all__ = [
    "BLOB_BASE",
    "LOCAL_STATE",
    "MAX_BODY",
    "MAX_RECORDS_PER_MESSAGE",
    "PUSH_PATH",
    "SYNC_PATH",
    "Box",
    "LockboxConfig",
    "LockboxService",
    "LockboxStats",
]

log = logging.getLogger(__name__)

LOCAL_STATE = "lockbox-state.json"


class LockboxService(LocalChanges, RemoteChanges, BlobFetching, PeerChannel):
    def __init__(
        self,
        node: SwarmNode,
        puddle: PuddleService,
        root: Path,
        config: LockboxConfig | None = None,
        *,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.node = node
        self.puddle = puddle
        self.root = root  # <state>/swarm/lockbox
        self.config = config or LockboxConfig()
        self.now_ns = now_ns
        self.stats = LockboxStats()
        self.store = BlobStore(root)
        self.boxes: dict[str, Box] = {}
        self._blob_owners: dict[str, set[str]] = {}  # sha → puddles whose live records need it
        self._fetches: dict[str, trio.CancelScope] = {}
        self._watched: set[int] = set()
        self._wake = trio.Event()
        self._sync_wake = trio.Event()
        self._pass_lock = trio.Lock()
        self._syncing: set[tuple[uuid.UUID, str]] = set()
        self._nursery: trio.Nursery | None = None
        self._blob_router = private_blob_router(self.store)
        for suffix in ("/info", "/have", "/chunks/{index}"):
            node.router.add(
                "GET", BLOB_BASE + suffix, self._blob_handler, max_body=0, claim=self._claims
            )
        node.router.add("POST", SYNC_PATH, self._sync_handler, max_body=MAX_BODY)
        node.router.add("POST", PUSH_PATH, self._push_handler, max_body=MAX_BODY)
        puddle.add_listener(self.wake)

    def _key(self, uid: int) -> PuddleKey | None:
        # peek, not get: background sync must not keep a puddle from its idle timeout
        held = self.puddle.keyring.peek(uid, trio.current_time())
        return None if held is None else held.key

    def _owner(self, uid: int) -> files.Owner:
        person = self.puddle.people(uid)
        return files.Owner(person.uid, person.gid, person.home)

    # --------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sync_loop)
            task_status.started()
            while True:
                self._wake = trio.Event()
                await self.run_pass()
                with trio.move_on_after(self.config.rescan_s):
                    await self._wake.wait()

    async def run_pass(self) -> None:
        """One pass over every person with a puddle here."""
        async with self._pass_lock:
            self.stats.passes += 1
            for puddle_hex, uid in list(self.puddle.index.items()):
                box = self._box(puddle_hex, uid)
                try:
                    await self._reconcile(box)
                except (LockboxError, PuddleError, BlobError, OSError) as exc:
                    box.fail(str(exc))
                    log.warning(
                        "lockbox: puddle %s… (uid %d): pass failed: %s",
                        puddle_hex[:16],
                        uid,
                        type(exc).__name__,
                    )
            await self._collect_and_fetch()

    async def _reconcile(self, box: Box) -> None:
        puddle = await self.puddle.puddle_of(box.uid)
        if puddle.public_hex != box.puddle_hex:
            return  # the index is stale; PuddleService rebuilds it
        box.members = frozenset(puddle.members.members)
        owner = self._owner(box.uid)
        self._watch(box.uid, owner)
        created = await trio.to_thread.run_sync(files.ensure_root, owner)
        if box.local is None or created:
            raw = await self._io_puddle(box.uid, "read")
            box.local = {} if created else state.decode_local(raw, box.puddle_hex)
        # a path whose record we do not know (lost state) is treated as new: recorded
        # again, never deleted
        local = {p: lf for p, lf in box.local.items() if lf.record in box.records}
        disk, box.skipped_local = await trio.to_thread.run_sync(files.scan, owner)
        made = await self._record_local(box, owner, local, disk)
        key = self._key(box.uid)
        if key is None:
            box.state, box.entries, box.shown, box.conflicts = "locked", {}, 0, 0
            here = {lf.record for lf in local.values()}
            box.pending_writes = sum(
                1
                for rid in records.live_ids(box.records) - here
                if box.records[rid].blob is not None
            )
        else:
            box.state = "unlocked"
            shown = self._view(box, key)
            await self._materialize(box, owner, key, shown, local, disk)
        if local != box.local:
            box.local = local
            await self._io_puddle(box.uid, "write", state.encode_local(box.puddle_hex, local))
        if made:
            await self._save(box)
            self._sync_wake.set()

    async def _io_puddle(self, uid: int, op: str, data: bytes = b"") -> bytes | None:
        from ..puddle import PuddleDir

        pdir = PuddleDir(self.puddle.people(uid))
        if op == "read":
            return await trio.to_thread.run_sync(pdir.read_extra, LOCAL_STATE)
        await trio.to_thread.run_sync(pdir.write_extra, LOCAL_STATE, data)
        return None

    # ------------------------------------------------------------------ watch

    def _watch(self, uid: int, owner: files.Owner) -> None:
        if not self.config.watch or uid in self._watched or self._nursery is None:
            return
        self._watched.add(uid)
        self._nursery.start_soon(self._watcher, uid, owner.root)

    async def _watcher(self, uid: int, root: Path) -> None:
        from watchfiles import awatch  # lazy: only once someone has a lockbox

        # watchfiles logs every change *with its path* at debug level: never let a
        # plaintext name reach a log, whatever level the daemon runs at
        logging.getLogger("watchfiles").setLevel(logging.INFO)
        try:
            while True:
                try:
                    async for _ in awatch(
                        root,
                        debounce=self.config.watch_debounce_ms,
                        step=50,
                        recursive=True,
                        debug=False,
                    ):
                        self.wake()
                except (OSError, RuntimeError) as exc:  # the dir went away: poll until back
                    log.debug("lockbox: watching uid %d's lockbox stopped: %s", uid, exc)
                await trio.sleep(self.config.rescan_s)
        finally:
            self._watched.discard(uid)

    # ----------------------------------------------------------------- status

    async def status(self, uid: int) -> dict[str, Any]:
        """The caller's lockbox here (shown to that person only; it may name files)."""
        boxes = [b for b in self.boxes.values() if b.uid == uid]
        if not boxes:
            return {"state": "none"}
        box = boxes[0]
        live = records.live_blobs(box.records)
        missing = [sha for sha in live if self.store.blob_path(sha) is None]
        return {
            "state": box.state,
            "puddle": box.puddle_hex,
            "files": box.shown if box.state == "unlocked" else len(box.local or {}),
            "conflicts": box.conflicts,
            "records": len(box.records),
            "live_records": len(records.live_ids(box.records)),
            "blobs_held": len(live) - len(missing),
            "blobs_missing": len(missing),
            "pending_writes": box.pending_writes,
            "skipped_local": box.skipped_local,
            "last_error": box.last_error,
            "last_error_unix": box.last_error_unix or None,
            "last_sync_unix": box.last_sync_unix or None,
        }
