"""LongdrawerService: each local person's ``~/longdrawer/`` kept in sync with their
other envoys, over the swarm's mTLS peer channel.

    LongdrawerService                 (started with nursery.start by the daemon)
    ├── MulticastDiscovery            224.0.0.43:1532: our people's ids and seqs
    ├── people loop                   finds ~/longdrawer/ folders (passwd), starts/stops:
    │   └── per person
    │       ├── watcher               watchfiles → scan the changed paths
    │       ├── rescan loop           full scan every rescan_interval_s; blob GC
    │       ├── sync loop             pull index changes from each partner; apply
    │       └── cross-subnet loop     confirm ~/.longdrawer/config.yaml's peers
    └── peer-channel routes           /longdrawer/v1/… (below)

Partners. A multicast announcement or a config entry is only a hint. An envoy becomes
a *partner* for a person only after an mTLS ``hello`` with it (its certificate names
its UUID, not revoked) shows it holds the same person id — and only if it announced
that person on our multicast group (same LAN segment) or sits at an address the
person's ``cross_subnet_peers`` lists. Every request about a person (index, notify,
blobs) is answered only to that person's partners (403 ``not_partner`` otherwise),
and only blobs the person's live index references are served.

Routes (JSON bodies; see docs/longdrawer.md):

    POST /longdrawer/v1/hello            {"people": [id…]} → {"people": {id: seq}}
    POST /longdrawer/v1/{id}/index       {"epoch", "since", "limit"} →
                                         {"epoch", "seq", "entries": […], "more"}
    POST /longdrawer/v1/{id}/notify      {"seq"} → {"ok": true}  (pull soon)
    POST /longdrawer/v1/{id}/small       {"sha256": […]} → many small blobs (batch.py)
    GET  /longdrawer/v1/{id}/blobs/{sha}/info|have|chunks/{i}
                                         the swarm transfer's blob routes, per person

Small files (one chunk) come many per ``/small`` request on the connection the index
was pulled on; larger ones are fetched with the swarm ``Fetcher`` as-is (its requests
are re-rooted under the person's blob routes) into the longdrawer blob store; a
version whose blob is already here (a rename, a copy) moves no bytes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import pwd
import stat
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from .. import http11, pki
from ..blobroutes import PrefixedDialer, private_blob_router
from ..blobstore import BlobError, BlobStore, describe_bytes, is_sha256
from ..discovery import DiscoveryConfig, MulticastDiscovery
from ..homes import home_of
from ..materialize import TargetRefused
from ..node import SwarmNode
from ..peers import PeerView
from ..transfer import Fetcher, TransferConfig
from .announce import PERSON_ID, Announcement, decode, person_id, person_key, split
from .batch import (
    MAX_SMALL_ANSWER_BYTES,
    MAX_SMALL_COUNT,
    SMALL_BLOB_BYTES,
    BadBatch,
    decode_small,
    encode_small,
    plan_batches,
)
from .config import LongdrawerConfig, PersonConfig, PersonConfigError, load_person_config
from .folder import Folder, FolderError, Person, ScanResult, Stale, read_person_file
from .index import Action, BadEntry, Decision, Entry, Kind, decide, from_wire, to_wire
from .paths import IGNORE_FILE, IgnoreRules, depth
from .store import IndexStore, IndexStoreError

log = logging.getLogger(__name__)

PREFIX = "/longdrawer/v1"
HELLO_PATH = PREFIX + "/hello"
MAX_INDEX_LIMIT = 2000
MAX_INDEX_BODY = 64 << 20
FETCH_CONCURRENCY = 8
OWN_COPY_BYTES = 64 << 20  # small files taken from our own copies per batch, at most
APPLY_CONCURRENCY = 16  # files written (and fsynced) side by side
STALL_S = 30.0  # a fetch with no new chunk for this long is given up (retried later)
BAD_STALL_S = 3.0  # … this long once a partner has served a chunk that did not match
RETRY_MAX_S = 300.0  # a blob that failed is retried after 2, 4, 8 … s up to this
REQUEST_TIMEOUT_S = 30.0
MAX_WATCH_PATHS = 256  # more changed paths in one batch: one full scan instead


@dataclass(slots=True)
class Partner:
    uuid: uuid.UUID
    address: str
    port: int
    via: str  # "multicast" | "cross_subnet"
    hostname: str | None
    confirmed_at: float
    last_heard: float
    announced_seq: int = 0
    pulled_seq: int = 0
    dirty: bool = True
    last_pull: float | None = None
    last_error: str = ""

    def view(self) -> PeerView:
        return PeerView(
            self.uuid,
            self.hostname,
            True,
            self.address,
            self.port,
            (self.address,),
            (self.via,),
            None,
            self.last_error,
            None,
        )


@dataclass(slots=True)
class PersonStats:
    scans: int = 0
    local_changes: int = 0
    applied: int = 0
    conflicts: int = 0
    refused: int = 0
    bytes_fetched: int = 0
    small_requests: int = 0  # /small requests made (many small files per request)
    files_written: int = 0
    last_error: str = ""


@dataclass(slots=True)
class PersonSync:
    person: Person
    folder: Folder
    rules: IgnoreRules = field(default_factory=IgnoreRules)
    config: PersonConfig = field(default_factory=PersonConfig)
    partners: dict[uuid.UUID, Partner] = field(default_factory=dict)
    cross_addrs: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)  # live file hashes (served to partners)
    # pinned from blob collection: being fetched or applied (count of batches at it)
    fetching: collections.Counter[str] = field(default_factory=collections.Counter)
    retry_at: dict[str, tuple[int, float]] = field(default_factory=dict)  # sha → (fails, when)
    pending: dict[str, int] = field(default_factory=dict)  # path → bytes still to apply
    changing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stats: PersonStats = field(default_factory=PersonStats)
    lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)  # tell partners (coalesced)
    fetchers: set[Fetcher] = field(default_factory=set)  # in flight (live byte counts)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(frozen=True, slots=True)
class _Heard:
    address: str
    port: int
    people: dict[str, int]
    at: float


def find_people(home_root: str, key: bytes) -> list[Person]:
    """People with a ``longdrawer`` folder they own: homes from passwd, or
    ``<home_root>/<login>`` when set (tests, netlab: many envoys on one machine)."""
    found: dict[int, Person] = {}
    for pw in pwd.getpwall():
        home = home_of(pw, home_root)
        try:
            st = os.lstat(home / "longdrawer")
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == pw.pw_uid and pw.pw_uid not in found:
            found[pw.pw_uid] = Person(
                pw.pw_name, pw.pw_uid, pw.pw_gid, home, person_id(key, pw.pw_name)
            )
    return list(found.values())


def _ca_der(ca_file: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(ca_file.read_bytes()).public_bytes(Encoding.DER)


def _decode_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise http11.ClientError(f"{what}: not JSON") from exc


class LongdrawerService:
    def __init__(self, node: SwarmNode, state_dir: Path, config: LongdrawerConfig) -> None:
        self.node = node
        self.config = config
        self.envoy = str(node.identity.uuid)
        root = state_dir / "longdrawer"
        self.store = BlobStore(root)
        self.index = IndexStore(root / "index.db")
        ident = node.identity
        self.key = person_key(_ca_der(ident.ca_file))
        self._client_ctx = pki.client_context(
            ident.ca_file, cert_file=ident.cert_file, key_file=ident.key_file
        )
        self.transfer = TransferConfig(refresh_have_s=0.1, idle_wait_s=0.05)
        self.people: dict[str, PersonSync] = {}
        self._heard: dict[uuid.UUID, _Heard] = {}
        self._confirming: set[tuple[uuid.UUID | None, str, int]] = set()
        self._discovery: MulticastDiscovery[Announcement] | None = None
        self._nursery: trio.Nursery | None = None
        self._round = 0
        self.bad_requests = 0
        self._blob_router = private_blob_router(self.store)
        r = node.router
        r.add("POST", HELLO_PATH, self._hello, max_body=64 << 10)
        r.add("POST", PREFIX + "/{pid}/index", self._serve_index, max_body=4096)
        r.add("POST", PREFIX + "/{pid}/notify", self._notify_handler, max_body=4096)
        r.add("POST", PREFIX + "/{pid}/small", self._serve_small, max_body=128 << 10)
        for tail in ("info", "have", "chunks/{index}"):
            r.add("GET", PREFIX + "/{pid}/blobs/{sha}/" + tail, self._serve_blob, max_body=0)

    def close(self) -> None:
        self.index.close()

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.node.config.multicast_enabled:
                self._discovery = MulticastDiscovery(
                    DiscoveryConfig(
                        group=cfg.group,
                        port=cfg.port,
                        interface_address=cfg.interface_address,
                        announce_interval_s=cfg.announce_interval_s,
                    ),
                    self._announcement,
                    self._on_announcement,
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
                nursery.start_soon(self._cross_subnet_loop, ps)
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

    def _on_announcement(self, ann: Announcement, source: str) -> None:
        if ann.uuid == self.node.identity.uuid:
            return
        now = trio.current_time()
        self._heard[ann.uuid] = _Heard(source, ann.port, dict(ann.people), now)
        for pid, seq in ann.people:
            ps = self.people.get(pid)
            if ps is None:
                continue
            partner = ps.partners.get(ann.uuid)
            if partner is None or (partner.address, partner.port) != (source, ann.port):
                self._start_confirm(ann.uuid, source, ann.port, "multicast")
                continue
            partner.last_heard = now
            partner.announced_seq = seq
            if seq != partner.pulled_seq:
                partner.dirty = True
                ps.wake.set()

    def _start_confirm(self, expect: uuid.UUID | None, address: str, port: int, via: str) -> None:
        key = (expect, address, port)
        if self._nursery is None or key in self._confirming:
            return
        self._confirming.add(key)
        self._nursery.start_soon(self._confirm, expect, address, port, via)

    async def _confirm(self, expect: uuid.UUID | None, address: str, port: int, via: str) -> None:
        """mTLS hello: which of our people does the envoy at address:port hold?"""
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                conn = await http11.connect(
                    address,
                    port,
                    self._client_ctx,
                    expect_uuid=expect,
                    timeout_s=self.node.config.probe_timeout_s,
                    local_address=self.node.config.listen_address or None,
                )
                async with conn:
                    if (reason := self.node.admit(conn.peer)) is not None:
                        raise http11.ClientError(f"refused: {reason}")
                    body = json.dumps({"people": sorted(self.people)}).encode()
                    resp = await conn.request("POST", HELLO_PATH, body=body)
            if resp.status != 200:
                raise http11.ClientError(f"hello answered {resp.status}")
            answer = _decode_json(resp.body, "hello")
            people = answer.get("people") if isinstance(answer, dict) else None
            if not isinstance(people, dict):
                raise http11.ClientError("hello: people missing")
            peer_uuid = conn.peer.uuid
            assert peer_uuid is not None  # admit() refused certificates without one
            now = trio.current_time()
            for pid, seq in people.items():
                ps = self.people.get(pid) if isinstance(pid, str) else None
                if ps is None or not isinstance(seq, int) or isinstance(seq, bool):
                    continue
                if via == "multicast" and not self._heard_from(peer_uuid, pid, address):
                    continue
                if via == "cross_subnet" and address not in ps.cross_addrs:
                    continue
                self._add_partner(ps, peer_uuid, conn.peer.hostname, address, port, via, seq, now)
        except (http11.ClientError, trio.TooSlowError, OSError) as exc:
            log.debug("longdrawer: hello to %s:%d failed: %s", address, port, exc)
        finally:
            self._confirming.discard((expect, address, port))

    def _heard_from(self, peer: uuid.UUID, pid: str, address: str) -> bool:
        heard = self._heard.get(peer)
        return heard is not None and pid in heard.people and heard.address == address

    def _add_partner(
        self,
        ps: PersonSync,
        peer: uuid.UUID,
        hostname: str | None,
        address: str,
        port: int,
        via: str,
        seq: int,
        now: float,
    ) -> None:
        old = ps.partners.get(peer)
        pulled = (
            old.pulled_seq if old is not None else self.index.progress(ps.person.pid, str(peer))[1]
        )
        if old is None:
            log.info("longdrawer: %s's folder is also on %s (%s)", ps.person.login, hostname, peer)
        ps.partners[peer] = Partner(peer, address, port, via, hostname, now, now, seq, pulled, True)
        ps.wake.set()

    # -------------------------------------------------------------- serving

    async def _hello(self, request: http11.Request) -> http11.Response:
        body = request.json()
        asked = body.get("people") if isinstance(body, dict) else None
        if not isinstance(asked, list) or len(asked) > 4096:
            raise http11.HTTPError(400, "bad_hello", "people must be a list of person ids")
        peer = request.peer
        assert peer is not None and peer.uuid is not None  # admitted by the node
        now = trio.current_time()
        answer = {}
        for pid in asked:
            ps = self.people.get(pid) if isinstance(pid, str) else None
            if ps is None:
                continue
            answer[pid] = (await trio.to_thread.run_sync(self.index.state, pid))[1]
            # The caller proved its UUID over mTLS; it announced this person from this
            # address on our segment (or is listed): a partner from now on.
            heard = self._heard.get(peer.uuid)
            if peer.uuid not in ps.partners:
                if heard is not None and self._heard_from(peer.uuid, pid, request.remote):
                    self._add_partner(
                        ps,
                        peer.uuid,
                        peer.hostname,
                        request.remote,
                        heard.port,
                        "multicast",
                        0,
                        now,
                    )
                elif request.remote in ps.cross_addrs:
                    self._start_confirm(peer.uuid, request.remote, self.node.port, "cross_subnet")
        return http11.json_response({"people": answer})

    def _partner_person(self, request: http11.Request) -> PersonSync:
        pid = request.params.get("pid", "")
        if not PERSON_ID.fullmatch(pid):
            self.bad_requests += 1
            raise http11.HTTPError(400, "bad_person", "not a person id")
        ps = self.people.get(pid)
        if ps is None:
            raise http11.HTTPError(404, "no_folder", "no such person's folder here")
        peer = request.peer
        if peer is None or peer.uuid is None or peer.uuid not in ps.partners:
            raise http11.HTTPError(403, "not_partner", "you are not a partner for this folder")
        return ps

    async def _serve_index(self, request: http11.Request) -> http11.Response:
        ps = self._partner_person(request)
        body = request.json()
        if not isinstance(body, dict):
            raise http11.HTTPError(400, "bad_request", "body must be an object")
        since, limit, epoch = body.get("since"), body.get("limit"), body.get("epoch")
        if (
            not isinstance(since, int)
            or isinstance(since, bool)
            or since < 0
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_INDEX_LIMIT
            or not isinstance(epoch, str)
            or len(epoch) > 64
        ):
            raise http11.HTTPError(400, "bad_request", "since, limit or epoch out of range")
        pid = ps.person.pid
        ours, _ = await trio.to_thread.run_sync(self.index.state, pid)
        start = since if epoch == ours else 0
        entries, seq = await trio.to_thread.run_sync(self.index.since, pid, start, limit)
        return http11.json_response(
            {
                "epoch": ours,
                "seq": seq,
                "entries": [to_wire(e) for e in entries],
                "more": len(entries) == limit,
            }
        )

    async def _notify_handler(self, request: http11.Request) -> http11.Response:
        ps = self._partner_person(request)
        body = request.json()
        seq = body.get("seq") if isinstance(body, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise http11.HTTPError(400, "bad_request", "seq must be an integer >= 0")
        assert request.peer is not None and request.peer.uuid is not None
        partner = ps.partners[request.peer.uuid]
        partner.announced_seq, partner.dirty = max(partner.announced_seq, seq), True
        ps.wake.set()
        return http11.json_response({"ok": True})

    async def _serve_blob(self, request: http11.Request) -> http11.Response:
        ps = self._partner_person(request)
        sha = request.params.get("sha", "")
        if sha not in ps.blobs:
            raise http11.HTTPError(404, "no_blob", "this folder holds no such file version")
        rest = request.path.split("/blobs/", 1)[1]
        handler, params, _ = self._blob_router.route("GET", "/swarm/v1/blobs/" + rest)
        return await handler(dataclasses.replace(request, params=params))

    async def _serve_small(self, request: http11.Request) -> http11.Response:
        """Many small blobs of the person's live index in one answer (batch.py)."""
        ps = self._partner_person(request)
        body = request.json()
        shas = body.get("sha256") if isinstance(body, dict) else None
        if (
            not isinstance(shas, list)
            or len(shas) > MAX_SMALL_COUNT
            or not all(is_sha256(sha) for sha in shas)
        ):
            raise http11.HTTPError(
                400, "bad_request", f"sha256 must be a list of at most {MAX_SMALL_COUNT} hashes"
            )
        live = ps.blobs

        def read() -> bytes:
            records, total = [], 0
            files: dict[str, tuple[str, int]] | None = None  # hash -> (path, size)
            for sha in dict.fromkeys(s for s in shas if s in live):
                data: bytes | None = None
                info = self.store.info(sha)
                if info is None:  # a small file of ours: indexed, never copied (folder.py)
                    if files is None:
                        files = self.index.live_files(ps.person.pid)
                    path, size = files.get(sha, ("", SMALL_BLOB_BYTES + 1))
                    if size > SMALL_BLOB_BYTES:
                        continue
                    if total + size > MAX_SMALL_ANSWER_BYTES:
                        break
                    data = ps.folder.read_indexed(path, sha, size)  # None if it changed
                elif info.num_chunks == 1 and info.size_bytes <= SMALL_BLOB_BYTES:
                    if total + info.size_bytes > MAX_SMALL_ANSWER_BYTES:
                        break
                    with contextlib.suppress(BlobError):
                        data = self.store.read_chunk(sha, 0)  # re-verified against its hash
                if data is not None:
                    records.append((sha, data))
                    total += len(data)
            return encode_small(records)

        data = await trio.to_thread.run_sync(read)
        return http11.Response(body=data, content_type="application/octet-stream")

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
            self._expire_partners(ps, now)
            for partner in list(ps.partners.values()):
                if partner.dirty or full:
                    await self._pull(ps, partner)

    def _expire_partners(self, ps: PersonSync, now: float) -> None:
        ttl = max(3 * self.config.announce_interval_s, 3 * self.config.pull_interval_s)
        for peer, partner in list(ps.partners.items()):
            if partner.via == "multicast" and now - partner.last_heard > ttl:
                log.info("longdrawer: %s: partner %s not heard; dropped", ps.person.login, peer)
                del ps.partners[peer]

    async def _pull(self, ps: PersonSync, partner: Partner) -> None:
        pid, peer = ps.person.pid, str(partner.uuid)
        partner.dirty = False
        try:
            epoch, since = await trio.to_thread.run_sync(self.index.progress, pid, peer)
            async with await self.node.dial(partner.view()) as conn:
                while True:
                    body = json.dumps({"epoch": epoch, "since": since, "limit": 1000}).encode()
                    resp = await conn.request(
                        "POST",
                        f"{PREFIX}/{pid}/index",
                        body=body,
                        max_body=MAX_INDEX_BODY,
                        timeout_s=REQUEST_TIMEOUT_S,
                    )
                    if resp.status != 200:
                        raise http11.ClientError(f"index answered {resp.status}")
                    their_epoch, seq, entries, more = self._parse_index(ps, resp.body)
                    if not await self._apply_batch(ps, entries, conn):
                        partner.dirty = True  # retried at the next pull
                        break
                    since = max([seq if not more else 0, *(e.seq for e in entries)])
                    epoch = their_epoch
                    await trio.to_thread.run_sync(self.index.set_progress, pid, peer, epoch, since)
                    partner.pulled_seq = since
                    if not more:
                        break
            partner.last_pull, partner.last_error = trio.current_time(), ""
        except (http11.ClientError, IndexStoreError) as exc:
            partner.last_error = str(exc)
            partner.dirty = True
            log.debug("longdrawer: pull from %s failed: %s", peer, exc)

    def _parse_index(self, ps: PersonSync, raw: bytes) -> tuple[str, int, list[Entry], bool]:
        obj = _decode_json(raw, "index")
        if not isinstance(obj, dict):
            raise http11.ClientError("index: not an object")
        epoch, seq, items, more = (obj.get(k) for k in ("epoch", "seq", "entries", "more"))
        if (
            not isinstance(epoch, str)
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or seq < 0
            or not isinstance(items, list)
            or len(items) > MAX_INDEX_LIMIT
            or not isinstance(more, bool)
        ):
            raise http11.ClientError("index: malformed answer")
        entries = []
        for item in items:
            try:
                entries.append(from_wire(item))
            except BadEntry as exc:
                ps.stats.refused += 1
                ps.stats.last_error = f"refused an entry from a peer: {exc}"
                log.warning("longdrawer: %s: %s", ps.person.login, ps.stats.last_error)
        return epoch, seq, entries, more

    async def _apply_batch(
        self, ps: PersonSync, entries: list[Entry], conn: http11.HTTPSConnection
    ) -> bool:
        """Apply a batch pulled over ``conn``; True when every entry is done.

        Entries whose blob is here go first. Small files still to fetch come in a few
        ``/small`` requests on ``conn`` (many per answer); each large one is fetched by
        a swarm ``Fetcher`` from every partner that has it and applied as soon as its
        own blob arrives, so one stuck file holds up no other."""
        pid = ps.person.pid
        ready: list[Entry] = []
        small: dict[str, list[Entry]] = {}
        large: dict[str, list[Entry]] = {}
        results: list[bool] = []
        now = trio.current_time()
        unique = {e.path: e for e in entries}  # one entry per path
        files = [p for p, e in unique.items() if e.kind is Kind.FILE and not e.deleted]
        known = await trio.to_thread.run_sync(self.index.get_many, pid, files)  # one hop
        for e in unique.values():
            if e.kind is Kind.FILE and not e.deleted and not ps.rules.ignored(e.path):
                local = known.get(e.path)
                if local is None or not local[0].vv.dominates(e.vv):
                    ps.pending[e.path] = e.size
                    if self.store.blob_path(e.sha256) is None:
                        if ps.retry_at.get(e.sha256, (0, 0.0))[1] > now:
                            results.append(False)  # failed lately: its turn comes later
                        elif e.size <= SMALL_BLOB_BYTES and e.blob_info().num_chunks <= 1:
                            small.setdefault(e.sha256, []).append(e)
                        else:
                            large.setdefault(e.sha256, []).append(e)
                        continue
            ready.append(e)
        # A small file we already hold under another path (a rename, a copy) is taken
        # from there — read before this batch's deletions run — and moves no bytes.
        own = await trio.to_thread.run_sync(self._own_copies, ps, small)
        for sha in own:
            ready += small.pop(sha)
        results += await self._apply_entries(ps, ready, own)
        pins = set(small) | set(large)
        ps.fetching.update(pins)  # kept from blob collection until applied
        try:
            await self._fetch_and_apply(ps, conn, small, large, results)
        finally:
            ps.fetching.subtract(pins)
            for sha in pins:
                if ps.fetching[sha] <= 0:
                    del ps.fetching[sha]
        return all(results)

    def _own_copies(self, ps: PersonSync, small: dict[str, list[Entry]]) -> dict[str, bytes]:
        """The bytes of the ``small`` blobs that a live file of ours already holds
        (checked against the hash as they are read), up to OWN_COPY_BYTES in all."""
        if not small:
            return {}
        files = self.index.live_files(ps.person.pid)
        found: dict[str, bytes] = {}
        total = 0
        for sha in small:
            path, size = files.get(sha, ("", -1))
            if size < 0 or total + size > OWN_COPY_BYTES:
                continue
            data = ps.folder.read_indexed(path, sha, size)
            if data is not None:
                found[sha] = data
                total += size
        return found

    async def _fetch_and_apply(
        self,
        ps: PersonSync,
        conn: http11.HTTPSConnection,
        small: dict[str, list[Entry]],
        large: dict[str, list[Entry]],
        results: list[bool],
    ) -> None:
        if small:
            delivered: set[str] = set()

            async def apply_answer(got: dict[str, bytes]) -> None:
                later: list[Entry] = []
                for sha in got:
                    delivered.add(sha)
                    ps.retry_at.pop(sha, None)
                    later += small[sha]
                results.extend(await self._apply_entries(ps, later, got))

            await self._fetch_small(ps, conn, small, apply_answer)
            for sha in small.keys() - delivered:
                self._failed(ps, sha)
                results.append(False)
        if large:
            limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)

            async def fetch_then_apply(group: list[Entry]) -> None:
                sha = group[0].sha256
                await self._fetch(ps, group[0], limiter)
                if self.store.blob_path(sha) is None:
                    self._failed(ps, sha)
                    results.append(False)
                    return
                ps.retry_at.pop(sha, None)
                results.extend(await self._apply_entries(ps, group))

            async with trio.open_nursery() as nursery:
                for group in large.values():
                    nursery.start_soon(fetch_then_apply, group)

    def _failed(self, ps: PersonSync, sha: str) -> None:
        """A blob could not be had: try it again after 2, 4, 8 … s."""
        fails = ps.retry_at.get(sha, (0, 0.0))[0] + 1
        ps.retry_at[sha] = (fails, trio.current_time() + min(RETRY_MAX_S, 2.0**fails))

    async def _apply_entries(
        self, ps: PersonSync, entries: list[Entry], inline: Mapping[str, bytes] | None = None
    ) -> list[bool]:
        """Apply entries under the person's lock: directories top-down, then files and
        links side by side (their fsyncs share the journal's commits), then deletions
        bottom-up. One notification round for the lot. ``inline``: small files' bytes
        received whole, by hash (written from memory, never put in the store)."""
        if not entries:
            return []
        dirs = sorted(
            (e for e in entries if e.kind is Kind.DIR and not e.deleted),
            key=lambda e: depth(e.path),
        )
        others = [e for e in entries if e.kind is not Kind.DIR and not e.deleted]
        gone = sorted((e for e in entries if e.deleted), key=lambda e: -depth(e.path))
        results: list[bool] = []
        async with ps.lock:
            for e in dirs:
                results.append(await self._apply_locked(ps, e, inline))
            limiter = trio.CapacityLimiter(APPLY_CONCURRENCY)

            async def one(e: Entry) -> None:
                async with limiter:
                    results.append(await self._apply_locked(ps, e, inline))

            async with trio.open_nursery() as nursery:
                for e in others:
                    nursery.start_soon(one, e)
            for e in gone:
                results.append(await self._apply_locked(ps, e, inline))
        await self._after_change(ps)
        return results

    async def _fetch_small(
        self,
        ps: PersonSync,
        conn: http11.HTTPSConnection,
        groups: dict[str, list[Entry]],
        deliver: Callable[[dict[str, bytes]], Awaitable[None]],
    ) -> None:
        """Fetch small blobs whole, many per request, on the pull's connection, and hand
        each answer's verified bytes (by hash) to ``deliver`` before asking for more: at
        most one answer (8 MiB) is held. A record nobody asked for, of the wrong size or
        whose bytes do not match its entry is dropped and counted."""
        pid = ps.person.pid
        wanted = {sha: group[0] for sha, group in groups.items()}

        def verified(records: list[tuple[str, bytes]]) -> dict[str, bytes]:
            good: dict[str, bytes] = {}
            for sha, data in records:
                entry = wanted[sha]
                if describe_bytes(data, entry.chunk_bytes) != entry.blob_info():
                    ps.stats.refused += 1
                    ps.stats.last_error = f"a partner sent {entry.path} with bad bytes"
                    log.warning("longdrawer: %s: %s", ps.person.login, ps.stats.last_error)
                    continue
                good[sha] = data
                ps.stats.bytes_fetched += len(data)
            return good

        empty = [(sha, b"") for sha, e in wanted.items() if e.size == 0]  # nothing to fetch
        if empty:
            await deliver(verified(empty))
        sizes = {sha: e.size for sha, e in wanted.items() if e.size > 0}
        for batch in plan_batches(sizes):
            ps.stats.small_requests += 1
            try:
                resp = await conn.request(
                    "POST",
                    f"{PREFIX}/{pid}/small",
                    body=json.dumps({"sha256": batch}).encode(),
                    max_body=MAX_SMALL_ANSWER_BYTES + 64 * len(batch),
                    timeout_s=REQUEST_TIMEOUT_S,
                )
                if resp.status != 200:
                    raise http11.ClientError(f"small answered {resp.status}")
                records = decode_small(resp.body)
            except (http11.ClientError, BadBatch) as exc:
                ps.stats.last_error = f"fetching small files: {exc}"
                log.info("longdrawer: %s: %s", ps.person.login, ps.stats.last_error)
                return
            asked, fitting = set(batch), []
            for sha, data in records:
                if sha not in asked or len(data) != wanted[sha].size:
                    ps.stats.refused += 1
                    ps.stats.last_error = f"a partner sent an unasked or mis-sized blob {sha[:12]}"
                    continue
                asked.discard(sha)
                fitting.append((sha, data))
            got = await trio.to_thread.run_sync(verified, fitting)
            if got:
                await deliver(got)

    async def _fetch(self, ps: PersonSync, entry: Entry, limiter: trio.CapacityLimiter) -> None:
        info = entry.blob_info()
        async with limiter:
            if self.store.blob_path(info.sha256) is not None:
                return
            fetcher = Fetcher(
                PrefixedDialer(self.node, f"{PREFIX}/{ps.person.pid}/blobs/").as_node(),
                self.store,
                info,
                self.transfer,
                peers=lambda: [p.view() for p in ps.partners.values()],
            )
            ps.fetchers.add(fetcher)
            started = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._stall_watch, fetcher, nursery.cancel_scope)
                    await fetcher.fetch()
                    nursery.cancel_scope.cancel()
                took = trio.current_time() - started
                log.info(
                    "longdrawer: %s: %s: %.1f MiB fetched in %.2f s from %d partner(s)",
                    ps.person.login,
                    entry.path,
                    info.size_bytes / 2**20,
                    took,
                    len(fetcher.progress.sources),
                )
            except BlobError as exc:
                ps.stats.last_error = f"fetching {entry.path}: {exc}"
                log.warning("longdrawer: %s: %s", ps.person.login, ps.stats.last_error)
            finally:
                ps.fetchers.discard(fetcher)
                ps.stats.bytes_fetched += fetcher.progress.bytes_in

    async def _stall_watch(self, fetcher: Fetcher, scope: trio.CancelScope) -> None:
        seen, since = -1, trio.current_time()
        while True:
            await trio.sleep(1)
            now = trio.current_time()
            if fetcher.progress.have_chunks != seen:
                seen, since = fetcher.progress.have_chunks, now
            elif now - since > (BAD_STALL_S if fetcher.progress.bad_chunks else STALL_S):
                log.info("longdrawer: fetch of %s stalled; retried later", fetcher.info.sha256[:12])
                scope.cancel()
                return

    async def _apply_locked(
        self, ps: PersonSync, remote: Entry, inline: Mapping[str, bytes] | None = None
    ) -> bool:
        """Apply one peer entry (``ps.lock`` held); False = not done (retry later).
        ``inline``: small files' bytes by hash (see ``_apply_entries``)."""
        inline = inline or {}
        pid = ps.person.pid
        if ps.rules.ignored(remote.path):
            return True
        for _ in range(3):
            local = await trio.to_thread.run_sync(self.index.get, pid, remote.path)
            decision = decide(local[0] if local else None, remote)
            if decision.action is Action.SKIP:
                ps.pending.pop(remote.path, None)
                return True
            new = decision.entry
            assert new is not None
            if decision.conflict:
                ps.stats.conflicts += 1
                log.info("longdrawer: %s: conflict on %s", ps.person.login, remote.path)
            if decision.action is not Action.TAKE:
                if decision.keep_remote_as and not await self._keep_copy(
                    ps, replace(remote, path=decision.keep_remote_as), inline
                ):
                    return False
                await trio.to_thread.run_sync(
                    self.index.put, pid, [(new, local[1] if local else "")]
                )
                return True
            is_file = new.kind is Kind.FILE and not new.deleted
            data = inline.get(new.sha256) if is_file else None
            if is_file and data is None and self.store.blob_path(new.sha256) is None:
                return False
            try:
                sig = await trio.to_thread.run_sync(ps.folder.apply, decision, local, data)
            except Stale:
                await self._scan_locked(ps, [remote.path])
                continue
            except FolderError as exc:
                ps.stats.last_error = str(exc)
                log.warning("longdrawer: %s: %s", ps.person.login, exc)
                if isinstance(exc.__cause__, TargetRefused):
                    ps.stats.refused += 1
                    ps.pending.pop(remote.path, None)
                    return True  # never writable through a symlink: do not retry
                return False
            await trio.to_thread.run_sync(self.index.put, pid, [(new, sig)])
            ps.pending.pop(remote.path, None)
            ps.stats.applied += 1
            if new.kind is Kind.FILE and not new.deleted:
                ps.stats.files_written += 1
            if decision.copy_to:
                await self._scan_locked(ps, [decision.copy_to])
            return True
        return False

    async def _keep_copy(self, ps: PersonSync, loser: Entry, inline: Mapping[str, bytes]) -> bool:
        """Write a peer's losing version as a conflict copy (then index it as ours)."""
        data = inline.get(loser.sha256) if loser.kind is Kind.FILE else None
        if loser.kind is Kind.FILE and data is None and self.store.blob_path(loser.sha256) is None:
            return False
        try:
            take = Decision(Action.TAKE, loser)
            await trio.to_thread.run_sync(ps.folder.apply, take, None, data)
        except Stale:
            pass  # something is already there (the same copy, made earlier): indexed below
        except FolderError as exc:
            ps.stats.last_error = str(exc)
            log.warning("longdrawer: %s: %s", ps.person.login, exc)
            return False
        await self._scan_locked(ps, [loser.path])
        return True

    # ----------------------------------------------------------- cross subnet

    async def _cross_subnet_loop(self, ps: PersonSync) -> None:
        while True:
            addrs: set[str] = set()
            for peer in ps.config.cross_subnet_peers:
                try:
                    infos = await trio.socket.getaddrinfo(peer.host, peer.port, type=2)
                except OSError as exc:
                    ps.stats.last_error = f"cross_subnet_peers: {peer.host}: {exc}"
                    continue
                for info in infos:
                    address = str(info[4][0])
                    addrs.add(address)
                    if not any(p.address == address for p in ps.partners.values()):
                        ps.cross_addrs.add(address)
                        self._start_confirm(None, address, peer.port, "cross_subnet")
            ps.cross_addrs = addrs
            await trio.sleep(self.config.pull_interval_s)

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
