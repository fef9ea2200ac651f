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
"""

from __future__ import annotations

import functools
import io
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import trio

from .. import http11
from ..blobinfo import info_from_peers
from ..blobstore import BlobError, BlobInfo, BlobStore, is_sha256
from ..node import SwarmNode
from ..peers import PeerView
from ..puddle import PuddleError, PuddleKey, PuddleService
from ..transfer import Fetcher, TransferConfig, register_blob_routes
from . import agefile, files, records, state
from .errors import BadRecord, DecryptFailed, LockboxError, SourceChanged
from .plan import Local, Stat, local_changes, remote_changes
from .records import BlobRef, Entry, Record, Shown

log = logging.getLogger(__name__)

SYNC_PATH = "/swarm/v1/lockbox/sync"
PUSH_PATH = "/swarm/v1/lockbox/push"
BLOB_BASE = "/swarm/v1/blobs/{sha}"
MAX_BODY = 64 << 20
MAX_RECORDS_PER_MESSAGE = 50_000
LOCAL_STATE = "lockbox-state.json"


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


class _RouterHolder:
    """Lets ``register_blob_routes`` fill a private router (it only uses ``.router``)."""

    def __init__(self) -> None:
        self.router = http11.Router()


class LockboxService:
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
        inner = _RouterHolder()
        register_blob_routes(cast(SwarmNode, inner), self.store)
        self._blob_router = inner.router
        for suffix in ("/info", "/have", "/chunks/{index}"):
            node.router.add(
                "GET", BLOB_BASE + suffix, self._blob_handler, max_body=0, claim=self._claims
            )
        node.router.add("POST", SYNC_PATH, self._sync_handler, max_body=MAX_BODY)
        node.router.add("POST", PUSH_PATH, self._push_handler, max_body=MAX_BODY)
        puddle.add_listener(self.wake)

    # ------------------------------------------------------------------ helpers

    def wake(self) -> None:
        self._wake.set()

    def _box(self, puddle_hex: str, uid: int) -> Box:
        box = self.boxes.get(puddle_hex)
        if box is None:
            recs = state.load_records(self._index_path(puddle_hex))
            box = self.boxes[puddle_hex] = Box(puddle_hex, uid, recs)
        box.uid = uid
        return box

    def _index_path(self, puddle_hex: str) -> Path:
        return self.root / "index" / f"{puddle_hex}.json"

    async def _save(self, box: Box) -> None:
        await trio.to_thread.run_sync(
            state.save_records, self._index_path(box.puddle_hex), dict(box.records)
        )

    def _key(self, uid: int) -> PuddleKey | None:
        # peek, not get: background sync must not keep a puddle from its idle timeout
        held = self.puddle.keyring.peek(uid, trio.current_time())
        return None if held is None else held.key

    def _owner(self, uid: int) -> files.Owner:
        person = self.puddle.people(uid)
        return files.Owner(person.uid, person.gid, person.home)

    def _member_peers(self, box: Box) -> list[PeerView]:
        return [p for p in self.node.peers() if p.uuid in box.members]

    async def _is_member(self, puddle_hex: str, who: uuid.UUID) -> bool:
        box = self.boxes.get(puddle_hex)
        uid = self.puddle.index.get(puddle_hex)
        if uid is None:
            return False
        if box is not None and who in box.members:
            return True
        try:  # the list may have grown since our last pass: read it once more
            members = (await self.puddle.puddle_of(uid)).members
        except PuddleError:
            return False
        if box is not None:
            box.members = frozenset(members.members)
        return who in members

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

    # ----------------------------------------------------- step 1: local changes

    async def _record_local(
        self,
        box: Box,
        owner: files.Owner,
        local: dict[str, Local],
        disk: Mapping[str, Stat],
    ) -> int:
        public = bytes.fromhex(box.puddle_hex)
        plan = local_changes(local, disk)
        made = 0
        for up in plan.uploads:
            reused = box.records.get(up.reuse) if up.reuse else None
            try:
                if reused is not None and reused.blob is not None and self._complete(reused.blob):
                    ref, st = reused.blob, up.stat
                else:
                    ref, st = await trio.to_thread.run_sync(
                        self._encrypt_file, owner, up.path, public
                    )
            except (SourceChanged, FileNotFoundError):
                continue  # changing right now: the next pass records it
            except (LockboxError, OSError, BlobError) as exc:
                box.fail(f"{up.path}: {exc}")
                log.warning("lockbox: a local file could not be encrypted (%s)", type(exc).__name__)
                continue
            entry = self._entry(up.path, False, st, ref, up.supersedes)
            rec = await self._seal(public, entry, ref)
            box.records[rec.id] = rec
            local[up.path] = Local(rec.id, st)
            made += 1
        for gone in plan.deletions:
            entry = self._entry(gone.path, True, None, None, gone.supersedes)
            rec = await self._seal(public, entry, None)
            box.records[rec.id] = rec
            del local[gone.path]
            made += 1
        if made:
            self.stats.records_made += made
            log.info("lockbox: puddle %s…: %d new records", box.puddle_hex[:16], made)
        return made

    def _complete(self, ref: BlobRef) -> bool:
        return self.store.blob_path(ref.sha256) is not None

    def _entry(
        self,
        path: str,
        deleted: bool,
        st: Stat | None,
        ref: BlobRef | None,
        supersedes: tuple[str, ...],
    ) -> Entry:
        return Entry(
            name=path,
            deleted=deleted,
            mode=st.mode if st else 0,
            size=st.size if st else 0,
            mtime_ns=st.mtime_ns if st else self.now_ns(),
            origin=str(self.node.identity.uuid),
            origin_name=self.node.identity.hostname,
            made_ns=self.now_ns(),
            blob=None if ref is None else ref.sha256,
            supersedes=tuple(sorted(set(supersedes))),
        )

    async def _seal(self, public: bytes, entry: Entry, ref: BlobRef | None) -> Record:
        payload = records.entry_payload(entry)

        def encrypt() -> bytes:
            out = io.BytesIO()
            agefile.encrypt(io.BytesIO(payload), len(payload), out, public)
            return out.getvalue()

        box = await trio.to_thread.run_sync(encrypt)
        return records.make_record(ref, entry.supersedes, box)

    def _encrypt_file(self, owner: files.Owner, path: str, public: bytes) -> tuple[BlobRef, Stat]:
        """Encrypt one of the person's files into the blob store (worker thread)."""
        tmp = self.root / "tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        out_path = tmp / f"enc-{uuid.uuid4().hex}"
        try:
            with files.open_source(owner, path) as (src, st):
                with open(out_path, "xb") as out:
                    agefile.encrypt(src, st.size, out, public)
                    agefile.fsync_file(out)
                after = files.stat_of(os.fstat(src.fileno()))
                if after != st:
                    raise SourceChanged("the file changed while it was encrypted")
            info = self.store.add_file(out_path, self.config.chunk_bytes)
        finally:
            out_path.unlink(missing_ok=True)
        return BlobRef.of(info), st

    # ---------------------------------------------------- step 2: remote changes

    def _view(self, box: Box, key: PuddleKey) -> dict[str, Shown]:
        identity = key.openssh_private()
        live = records.live_ids(box.records)
        for rid in live - set(box.entries) - box.bad:
            rec = box.records[rid]
            try:
                out = io.BytesIO()
                agefile.decrypt(io.BytesIO(rec.box), out, identity)
                box.entries[rid] = records.entry_from_payload(out.getvalue(), rec)
            except (DecryptFailed, BadRecord) as exc:
                box.bad.add(rid)
                self.stats.records_refused += 1
                log.warning("lockbox: record %s refused: %s", rid[:12], type(exc).__name__)
        box.entries = {rid: e for rid, e in box.entries.items() if rid in live}
        shown = records.view(box.entries)
        box.shown = len(shown)
        box.conflicts = sum(1 for path, s in shown.items() if path != s.entry.name)
        return shown

    async def _materialize(
        self,
        box: Box,
        owner: files.Owner,
        key: PuddleKey,
        shown: dict[str, Shown],
        local: dict[str, Local],
        disk: Mapping[str, Stat],
    ) -> None:
        plan = remote_changes(shown, local, disk)
        identity = key.openssh_private()
        pending = 0
        for s in plan.write:
            assert s.entry.blob is not None
            blob = self.store.blob_path(s.entry.blob)
            if blob is None:
                pending += 1
                continue

            def fill(dst: BinaryIO, blob: Path = blob) -> None:
                with open(blob, "rb") as src:
                    agefile.decrypt(src, dst, identity)

            write = functools.partial(
                files.write_file,
                owner,
                s.path,
                mode=s.entry.mode,
                mtime_ns=s.entry.mtime_ns,
                expect=disk.get(s.path),
                fill=fill,
            )
            try:
                st = await trio.to_thread.run_sync(write)
            except DecryptFailed:
                self.stats.decrypt_failures += 1
                box.fail(f"{s.path}: its ciphertext failed to decrypt; the file was left as it was")
                log.warning(
                    "lockbox: blob %s of record %s failed to decrypt (altered or truncated): "
                    "rejected, plaintext untouched; fetching it again",
                    s.entry.blob[:12],
                    s.record[:12],
                )
                await trio.to_thread.run_sync(self.store.delete, s.entry.blob)
                continue
            except (LockboxError, OSError) as exc:
                box.fail(f"{s.path}: {exc}")
                log.warning("lockbox: a file could not be written (%s)", type(exc).__name__)
                continue
            if st is not None:
                local[s.path] = Local(s.record, st)
                self.stats.files_written += 1
        for path in plan.remove:
            try:
                removed = await trio.to_thread.run_sync(
                    files.remove_file, owner, path, local[path].stat
                )
            except (LockboxError, OSError) as exc:
                box.fail(f"{path}: {exc}")
                continue
            if removed:
                del local[path]
                self.stats.files_removed += 1
        box.pending_writes = pending

    # ---------------------------------------------------- step 3: blobs

    async def _collect_and_fetch(self) -> None:
        owners: dict[str, set[str]] = {}
        refs: dict[str, tuple[Box, BlobRef]] = {}
        for box in self.boxes.values():
            for sha, ref in records.live_blobs(box.records).items():
                owners.setdefault(sha, set()).add(box.puddle_hex)
                refs[sha] = (box, ref)
        self._blob_owners = owners
        for sha, scope in list(self._fetches.items()):
            if sha not in owners:
                scope.cancel()
        assert self._nursery is not None
        for sha, (box, ref) in refs.items():
            if sha not in self._fetches and not self._complete(ref):
                scope = self._fetches[sha] = trio.CancelScope()
                self._nursery.start_soon(self._fetch, box, ref, scope)
        # inside the pass: a blob encrypted for a record not yet made is never collected
        collected = await trio.to_thread.run_sync(self.store.gc, set(owners), set(self._fetches))
        self.stats.blobs_collected += len(collected)

    async def _fetch(self, box: Box, ref: BlobRef, scope: trio.CancelScope) -> None:
        try:
            with scope:
                info = None
                while info is None:
                    info = await self._info_from_members(box, ref)
                    if info is None:
                        await trio.sleep(self.config.sync_interval_s)
                fetcher = Fetcher(
                    self.node,
                    self.store,
                    info,
                    self.config.transfer,
                    peers=lambda: self._member_peers(box),
                )
                await fetcher.fetch()
                self.stats.blobs_fetched += 1
                self.wake()
        except* BlobError as group:
            box.fail(f"a blob could not be fetched: {group.exceptions[0]}")
            log.warning("lockbox: blob %s: %s", ref.sha256[:12], group.exceptions[0])
        finally:
            self._fetches.pop(ref.sha256, None)

    async def _info_from_members(self, box: Box, ref: BlobRef) -> BlobInfo | None:
        def problem(info: BlobInfo) -> str | None:
            return None if ref.matches(info) else "is not the one the record names"

        def mismatch(peer: PeerView, why: str) -> None:
            log.warning(
                "lockbox: peer %s offered a chunk list for %s that %s",
                peer.uuid,
                ref.sha256[:12],
                why,
            )

        return await info_from_peers(
            self.node, self._member_peers(box), ref.sha256, problem, mismatch
        )

    # ------------------------------------------------------------ peer channel

    def _claims(self, params: Mapping[str, str]) -> bool:
        return params.get("sha", "") in self._blob_owners

    async def _blob_handler(self, request: http11.Request) -> http11.Response:
        assert request.peer is not None and request.peer.uuid is not None  # admitted
        for puddle_hex in list(self._blob_owners.get(request.params["sha"], ())):
            if await self._is_member(puddle_hex, request.peer.uuid):
                handler, _params, _limit = self._blob_router.route(request.method, request.path)
                return await handler(request)
        self.stats.refusals += 1
        log.info("lockbox: refused blob request from non-member %s", request.peer.label)
        raise http11.HTTPError(403, "not_member", "not a member of the puddle that holds this")

    async def _member_box(self, request: http11.Request) -> tuple[Box, dict[str, Any]]:
        assert request.peer is not None and request.peer.uuid is not None  # admitted
        body = request.json()
        hex_ = body.get("puddle") if isinstance(body, dict) else None
        if not isinstance(hex_, str) or not await self._is_member(hex_, request.peer.uuid):
            self.stats.refusals += 1
            log.info("lockbox: refused %s from non-member %s", request.path, request.peer.label)
            raise http11.HTTPError(403, "not_member", "not a member of that puddle here")
        assert isinstance(body, dict)
        return self._box(hex_, self.puddle.index[hex_]), body

    async def _sync_handler(self, request: http11.Request) -> http11.Response:
        box, body = await self._member_box(request)
        ids = body.get("ids")
        if (
            not isinstance(ids, list)
            or len(ids) > MAX_RECORDS_PER_MESSAGE * 4
            or not all(is_sha256(i) for i in ids)
        ):
            raise http11.HTTPError(400, "bad_ids", "ids must be a list of record ids")
        theirs = set(ids)
        give = [box.records[i].to_wire() for i in sorted(set(box.records) - theirs)]
        want = sorted(theirs - set(box.records))
        return http11.json_response(
            {"records": give[:MAX_RECORDS_PER_MESSAGE], "want": want[:MAX_RECORDS_PER_MESSAGE]}
        )

    async def _push_handler(self, request: http11.Request) -> http11.Response:
        box, body = await self._member_box(request)
        accepted = await self._merge(
            box, body.get("records"), request.peer.label if request.peer else "?"
        )
        return http11.json_response({"accepted": accepted})

    async def _merge(self, box: Box, wire: Any, source: str) -> int:
        if not isinstance(wire, list) or len(wire) > MAX_RECORDS_PER_MESSAGE:
            raise http11.HTTPError(400, "bad_records", "records must be a list")
        new: list[Record] = []
        for item in wire:
            try:
                rec = records.record_from_wire(item)
            except BadRecord as exc:
                self.stats.records_refused += 1
                log.warning("lockbox: refused a record from %s: %s", source, exc)
                continue
            if rec.id not in box.records:
                new.append(rec)
        if new:
            box.records = records.merge(box.records, new)
            self.stats.records_in += len(new)
            await self._save(box)
            self.wake()
        return len(new)

    async def _sync_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                self._sync_wake = trio.Event()
                for box in list(self.boxes.values()):
                    for peer in self._member_peers(box):
                        key = (peer.uuid, box.puddle_hex)
                        if key not in self._syncing:
                            self._syncing.add(key)
                            nursery.start_soon(self._exchange, peer, box)
                with trio.move_on_after(self.config.sync_interval_s):
                    await self._sync_wake.wait()

    async def _exchange(self, peer: PeerView, box: Box) -> None:
        """Push-pull the record set with one member (1.5 round trips)."""
        self.stats.syncs += 1
        try:
            async with await self.node.dial(peer) as conn:
                body = {"puddle": box.puddle_hex, "ids": sorted(box.records)}
                resp = await conn.request(
                    "POST",
                    SYNC_PATH,
                    body=_dumps(body),
                    max_body=MAX_BODY,
                    timeout_s=self.config.request_timeout_s,
                )
                if resp.status != 200:
                    raise http11.ClientError(f"sync answered {resp.status}")
                answer = resp.json()
                if not isinstance(answer, dict) or not isinstance(answer.get("want"), list):
                    raise http11.ClientError("sync answer is not {records, want}")
                try:
                    await self._merge(box, answer.get("records"), str(peer.uuid))
                except http11.HTTPError as exc:
                    raise http11.ClientError(exc.message) from exc
                give = [
                    box.records[i].to_wire()
                    for i in answer["want"][:MAX_RECORDS_PER_MESSAGE]
                    if isinstance(i, str) and i in box.records
                ]
                if give:
                    push = {"puddle": box.puddle_hex, "records": give}
                    await conn.request(
                        "POST",
                        PUSH_PATH,
                        body=_dumps(push),
                        max_body=MAX_BODY,
                        timeout_s=self.config.request_timeout_s,
                    )
            box.last_sync_unix = time.time()
        except http11.ClientError as exc:
            self.stats.sync_failures += 1
            log.debug("lockbox sync with %s failed: %s", peer.uuid, exc)
        finally:
            self._syncing.discard((peer.uuid, box.puddle_hex))

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


def _dumps(obj: Any) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":")).encode()
