"""Gitback on an envoy: publish people's repositories as bundles, keep mirrors of peers'.

    GitbackService
    ├── scanner   (an allowed envoy) each opted-in person's ~/gitback/<project>/ with a
    │             .gitback.yaml: a ref change → a bundle (full or incremental) → a blob
    │             in our store + a record → pushed to every allowed peer
    ├── puller    every ``pull_interval_s``: each allowed peer's own records
    └── followers one task per (seeder, person, project) whose mirror is behind: fetch
                  the next bundle's blob from allowed peers, apply it (``Mirror``)

Peer-channel routes (every caller is a verified envoy; these also require that the
caller's *certificate hostname* and our own are allowed by the host patterns):

    POST /swarm/v1/gitback/records          a seeder pushes its records
    GET  /swarm/v1/gitback/records          the records this envoy seeded
    GET  /swarm/v1/gitback/blobs/<sha>/…    info, have, chunks of a blob a held record
                                            names (the swarm's blob routes, own store)

A record is accepted only from its seeder: the UUID of the certificate that pushed it,
or of the peer we pulled it from, must be the record's ``seeder`` — records are never
relayed, so no signature is needed. Its person must be opted in. Gitback blobs live in
their own store (``<state>/swarm/gitback/.blobs``), not filecast's: filecast collects
every blob its manifest does not name, and these blobs go only to allowed envoys.

Everything a peer sends is checked before use; a bad record is logged once with its
reason, counted, and changes nothing. A failing repo never stops the service.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .. import http11
from ..blobinfo import info_from_peers
from ..blobroutes import PrefixedDialer, private_blob_router
from ..blobstore import BlobError, BlobInfo, BlobStore, is_sha256
from ..node import SwarmNode
from ..peers import PeerView
from ..pki import write_public_file
from ..puddle import Person
from ..transfer import Fetcher, TransferConfig
from .gitcmd import GitError, fast_forwards
from .mirror import Mirror, mirror_path
from .packer import Project, find_projects, pack_bundle, read_tips, refs_fingerprint
from .policy import DENY_ALL, GitbackPolicy
from .records import (
    Record,
    RecordRejected,
    choose_kind,
    from_wire,
    keep_from,
    next_to_apply,
    parse_bundle_header,
)

log = logging.getLogger(__name__)

PREFIX = "/swarm/v1/gitback"
RECORDS_PATH = PREFIX + "/records"
BLOBS = PREFIX + "/blobs/"
CHUNK_BYTES = 1 << 20
MAX_RECORDS_PER_MESSAGE = 10_000
MAX_BODY = 32 << 20


@dataclass(frozen=True, slots=True)
class GitbackConfig:
    scan_interval_s: float = 2.0  # how often refs are looked at (a cheap lstat pass)
    pull_interval_s: float = 10.0  # anti-entropy: each allowed peer's records
    max_chain: int = 32  # incrementals after a full one before the next full one
    max_bundle_bytes: int = 1 << 30  # a receiver fetches no bigger bundle
    transfer: TransferConfig = field(default_factory=TransferConfig)


@dataclass(slots=True)
class Seeded:
    """What this seeder last distributed for one of its people's projects."""

    seq: int
    tips: dict[str, str]
    head: str
    chain: int  # incrementals since the last full bundle


@dataclass(slots=True)
class GitbackStats:
    bundles_full: int = 0
    bundles_incremental: int = 0
    records_in: int = 0
    rejected: int = 0
    last_rejection: str = ""
    applied: int = 0
    refused_callers: int = 0


def blob_problem(info: BlobInfo, rec: Record) -> str | None:
    """Why a chunk list a peer offered does not fit the record (None when it does)."""
    if info.size_bytes != rec.size_bytes:
        return f"it is {info.size_bytes} bytes, the record declares {rec.size_bytes}"
    if (info.sha256, info.chunk_bytes, info.chunks_digest) != (
        rec.blob,
        rec.chunk_bytes,
        rec.chunks_digest,
    ):
        return "its hash or chunk list is not the one the record names"
    return None


class GitbackService:
    def __init__(
        self,
        node: SwarmNode,
        root: Path,
        people: Callable[[str], Person | None],
        config: GitbackConfig | None = None,
    ) -> None:
        self.node = node
        self.root = root  # <state>/swarm/gitback
        self.people = people
        self.config = config or GitbackConfig()
        self.me = str(node.identity.uuid)
        self.policy: GitbackPolicy = DENY_ALL
        self.stats = GitbackStats()
        self.store = BlobStore(root)
        self.records: dict[tuple[str, str, str], dict[int, Record]] = {}
        self.hostnames: dict[str, str] = {}  # seeder uuid → its certificate's hostname
        self.seeded: dict[tuple[str, str], Seeded] = {}
        self.problems: dict[tuple[str, ...], str] = {}  # repo or project → why it waits
        self._fingerprints: dict[tuple[str, str], object] = {}
        self._floors: dict[tuple[str, str, str], int] = {}  # records below are superseded
        self._following: set[tuple[str, str, str]] = set()
        self._locks: dict[tuple[str, str, str], trio.Lock] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._load()
        self._blob_router = private_blob_router(self.store)
        node.router.add("POST", RECORDS_PATH, self._push_handler, max_body=MAX_BODY)
        node.router.add("GET", RECORDS_PATH, self._records_handler, max_body=0)
        for suffix in ("/info", "/have", "/chunks/{index}"):
            node.router.add("GET", BLOBS + "{sha}" + suffix, self._blob_handler, max_body=0)

    # ------------------------------------------------------------------ state

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def _load(self) -> None:
        try:
            obj = json.loads(self.state_file.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("gitback: ignoring unreadable %s: %s", self.state_file, exc)
            return
        for item in obj.get("records", []):
            try:
                self._hold(from_wire(item))
            except RecordRejected as exc:
                log.warning("gitback: dropped a stored record: %s", exc)
        self.hostnames = {str(k): str(v) for k, v in obj.get("hostnames", {}).items()}
        for key, s in obj.get("seeded", {}).items():
            person, _, project = key.partition("/")
            self.seeded[(person, project)] = Seeded(
                int(s["seq"]), dict(s["tips"]), str(s["head"]), int(s["chain"])
            )

    def _save(self) -> None:
        obj = {
            "records": [r.to_wire() for recs in self.records.values() for r in recs.values()],
            "hostnames": self.hostnames,
            "seeded": {f"{p}/{j}": dataclasses.asdict(s) for (p, j), s in self.seeded.items()},
        }
        write_public_file(self.state_file, json.dumps(obj).encode(), 0o600)

    def _hold(self, rec: Record) -> bool:
        """Keep a record (True if new). Pruning waits until a newer full record has been
        applied (``_prune``): a bad one must not evict the good ones before it."""
        recs = self.records.setdefault(rec.repo, {})
        held = recs.get(rec.seq)
        if held is not None:
            if held != rec:
                raise RecordRejected(f"seq {rec.seq} of {rec.project} is already another record")
            return False
        if rec.seq < self._floors.get(rec.repo, 0):
            return False  # superseded already
        recs[rec.seq] = rec
        return True

    def _prune(self, key: tuple[str, str, str], upto: int) -> None:
        """Forget the records a full one at or below ``upto`` superseded."""
        recs = self.records.get(key, {})
        floor = keep_from(r for r in recs.values() if r.seq <= upto)
        self._floors[key] = max(floor, self._floors.get(key, 0))
        for seq in [s for s in recs if s < floor]:
            del recs[seq]

    def set_policy(self, policy: GitbackPolicy) -> None:
        """From check-in: the host patterns and the people opted in."""
        if policy != self.policy:
            log.info(
                "gitback: this envoy is %s; %d people opted in",
                "allowed" if policy.allows_host(self.node.identity.hostname) else "not allowed",
                len(policy.users),
            )
            self.policy = policy
            self.wake()

    @property
    def allowed(self) -> bool:
        return self.policy.allows_host(self.node.identity.hostname)

    def allowed_peers(self) -> list[PeerView]:
        return [p for p in self.node.peers() if self.policy.allows_host(p.hostname)]

    def wake(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    def _reject(self, source: str, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.last_rejection = f"from {source}: {reason}"
        log.warning("gitback: refused a record from %s: %s", source, reason)

    # ----------------------------------------------------------------- routes

    def _admit(self, request: http11.Request) -> str:
        peer = request.peer
        if peer is None or peer.uuid is None:
            raise http11.HTTPError(403, "forbidden", "an envoy certificate is required")
        if not self.allowed or not self.policy.allows_host(peer.hostname):
            self.stats.refused_callers += 1
            raise http11.HTTPError(
                403, "gitback_not_allowed", "gitback is not allowed between these envoys"
            )
        return str(peer.uuid)

    def accept(self, items: Any, caller: str, hostname: str | None) -> tuple[int, list[str]]:
        """Records ``caller`` (a verified envoy UUID) sent: only its own are taken."""
        if not isinstance(items, list) or len(items) > MAX_RECORDS_PER_MESSAGE:
            raise RecordRejected(f"records must be a list of at most {MAX_RECORDS_PER_MESSAGE}")
        accepted, bad = 0, []
        for item in items:
            try:
                rec = from_wire(item)
                if str(rec.seeder) != caller:
                    raise RecordRejected(
                        f"a record for {rec.seeder}'s repo {rec.project}: "
                        "records are taken only from their seeder"
                    )
                if not self.policy.opted_in(rec.person):
                    raise RecordRejected(f"{rec.person} has not opted in to gitback")
                if rec.seeder == self.node.identity.uuid:
                    raise RecordRejected("a record in our own name")
                accepted += self._hold(rec)
            except RecordRejected as exc:
                self._reject(caller, str(exc))
                bad.append(str(exc))
        if accepted:
            if hostname:
                self.hostnames[caller] = hostname
            self.stats.records_in += accepted
            self._save()
            self.wake()
        return accepted, bad

    async def _push_handler(self, request: http11.Request) -> http11.Response:
        caller = self._admit(request)
        obj = request.json()
        try:
            accepted, bad = self.accept(
                obj.get("records") if isinstance(obj, dict) else None,
                caller,
                request.peer.hostname if request.peer else None,
            )
        except RecordRejected as exc:
            raise http11.HTTPError(400, "bad_records", str(exc)) from exc
        return http11.json_response({"accepted": accepted, "rejected": bad})

    def own_records(self) -> list[Record]:
        return [r for key, recs in self.records.items() if key[0] == self.me for r in recs.values()]

    async def _records_handler(self, request: http11.Request) -> http11.Response:
        self._admit(request)
        return http11.json_response({"records": [r.to_wire() for r in self.own_records()]})

    def _referenced(self) -> set[str]:
        return {r.blob for recs in self.records.values() for r in recs.values()}

    async def _blob_handler(self, request: http11.Request) -> http11.Response:
        self._admit(request)
        sha = request.params.get("sha", "")
        if not is_sha256(sha) or sha not in self._referenced():
            raise http11.HTTPError(404, "no_blob", "no gitback record here names this blob")
        rest = request.path[len(BLOBS) :]
        handler, params, _ = self._blob_router.route("GET", "/swarm/v1/blobs/" + rest)
        return await handler(dataclasses.replace(request, params=params))

    # -------------------------------------------------------------- publishing

    async def scan_once(self) -> None:
        """Look at every opted-in person's projects once; publish what changed."""
        if not self.allowed:
            return
        for user in sorted(self.policy.users):
            person = await trio.to_thread.run_sync(self.people, user)
            if person is None:
                continue  # no such account on this envoy
            projects = await trio.to_thread.run_sync(find_projects, person)
            for project in projects:
                key = (user, project.name)
                if project.error or project.git_dir is None or project.config is None:
                    self._problem(key, project.error)
                    continue
                if not project.config.enabled:
                    continue
                try:
                    await self._publish_if_changed(user, person, project)
                except (GitError, RecordRejected, BlobError, OSError) as exc:
                    self._problem(key, str(exc))
                else:
                    self.problems.pop(key, None)

    def _problem(self, key: tuple[str, ...], message: str) -> None:
        if self.problems.get(key) != message:
            log.warning("gitback: %s: %s", "/".join(key), message)
        self.problems[key] = message

    async def _publish_if_changed(self, user: str, person: Person, project: Project) -> None:
        assert project.git_dir is not None and project.config is not None
        key = (user, project.name)
        git_dir = project.git_dir
        mark = await trio.to_thread.run_sync(refs_fingerprint, git_dir)
        last = self.seeded.get(key)
        if last is not None and self._fingerprints.get(key) == mark:
            return
        tips, head = await trio.to_thread.run_sync(read_tips, person, git_dir)
        if last is not None and (last.tips, last.head) == (tips, head):
            self._fingerprints[key] = mark
            return
        if not tips:
            return  # nothing committed yet
        moves = {}
        if last is not None:
            moves = {r: (last.tips[r], o) for r, o in tips.items() if last.tips.get(r, o) != o}
        ff = await trio.to_thread.run_sync(fast_forwards, git_dir, moves, person)
        kind = choose_kind(
            last.tips if last else None, tips, ff, last.chain if last else 0, self.config.max_chain
        )
        packed = await trio.to_thread.run_sync(
            self._pack, person, git_dir, user, project, tips, head, kind, last
        )
        if packed is None:
            return
        rec, info = packed
        self.seeded[key] = Seeded(
            rec.seq, dict(tips), head, 0 if rec.kind == "full" else (last.chain if last else 0) + 1
        )
        self._fingerprints[key] = mark
        self._hold(rec)
        self._prune(rec.repo, rec.seq)
        self.hostnames[self.me] = self.node.identity.hostname
        self._save()
        await trio.to_thread.run_sync(self._collect)
        if rec.kind == "full":
            self.stats.bundles_full += 1
        else:
            self.stats.bundles_incremental += 1
        log.info(
            "gitback: %s/%s seq %d: %s bundle of %d bytes, %d refs",
            user,
            project.name,
            rec.seq,
            rec.kind,
            info.size_bytes,
            len(rec.tips),
        )
        if self._nursery is not None:
            for peer in self.allowed_peers():
                self._nursery.start_soon(self._push_to, peer, [rec])

    def _pack(
        self,
        person: Person,
        git_dir: Path,
        user: str,
        project: Project,
        tips: dict[str, str],
        head: str,
        kind: str,
        last: Seeded | None,
    ) -> tuple[Record, BlobInfo] | None:
        """Blocking: the bundle (as the person) → a blob in our store → its record."""
        assert project.config is not None
        staging = self.root / "staging"
        staging.mkdir(mode=0o700, exist_ok=True)
        path = staging / f"{secrets.token_hex(8)}.bundle"
        try:
            exclude = sorted(set(last.tips.values())) if last and kind == "incremental" else []
            with open(path, "wb") as out:
                made = pack_bundle(person, git_dir, exclude, out)
            if not made:  # nothing new object-wise (a new ref at an old commit)
                kind, exclude = "full", []
                with open(path, "wb") as out:
                    pack_bundle(person, git_dir, [], out)
            size = path.stat().st_size
            if size > project.config.max_bundle_bytes:
                raise RecordRejected(
                    f"the {kind} bundle is {size} bytes, over max_bundle_bytes "
                    f"{project.config.max_bundle_bytes} (.gitback.yaml)"
                )
            with open(path, "rb") as f:
                header = parse_bundle_header(f.read(4 << 20))
            if any(tips.get(r) != o for r, o in header.refs.items()) or (
                kind == "full" and set(header.refs) != set(tips)
            ):
                return None  # the repo moved while we packed: look again next round
            info = self.store.add_file(path, CHUNK_BYTES)
        finally:
            path.unlink(missing_ok=True)
        seq = last.seq + 1 if last else 1
        rec = Record(
            seeder=self.node.identity.uuid,
            person=user,
            project=project.name,
            seq=seq,
            kind="full" if kind == "full" else "incremental",
            base_seq=last.seq if last and kind == "incremental" else 0,
            blob=info.sha256,
            size_bytes=info.size_bytes,
            chunk_bytes=info.chunk_bytes,
            chunks_digest=info.chunks_digest,
            tips=dict(tips),
            head=head,
            prerequisites=tuple(sorted(header.prerequisites)),
            created_unix=time.time(),
        )
        return from_wire(rec.to_wire()), info  # the receivers' own check, on our side too

    async def _push_to(self, peer: PeerView, recs: list[Record]) -> None:
        body = json.dumps({"records": [r.to_wire() for r in recs]}).encode()
        try:
            async with await self.node.dial(peer) as conn:
                resp = await conn.request("POST", RECORDS_PATH, body=body, max_body=1 << 20)
        except http11.ClientError as exc:
            log.debug("gitback: push to %s failed: %s", peer.uuid, exc)
            return
        if resp.status != 200:
            log.debug("gitback: %s refused our records (%d)", peer.uuid, resp.status)

    # --------------------------------------------------------------- receiving

    async def pull_from(self, peer: PeerView) -> None:
        """The peer's own records (anti-entropy; the push is the fast path)."""
        try:
            async with await self.node.dial(peer) as conn:
                resp = await conn.request("GET", RECORDS_PATH, max_body=MAX_BODY)
                who = str(conn.peer.uuid)
        except http11.ClientError as exc:
            log.debug("gitback: pull from %s failed: %s", peer.uuid, exc)
            return
        if resp.status != 200:
            return
        try:
            obj = resp.json()
            self.accept(obj.get("records") if isinstance(obj, dict) else None, who, peer.hostname)
        except (http11.ClientError, RecordRejected) as exc:
            self._reject(who, str(exc))

    def _behind(self) -> list[tuple[str, str, str]]:
        return [k for k in self.records if k[0] != self.me and k not in self._following]

    def lock_for(self, key: tuple[str, str, str]) -> trio.Lock:
        """One writer or reader of a mirror at a time (applies, restores)."""
        return self._locks.setdefault(key, trio.Lock())

    async def _follow(self, key: tuple[str, str, str]) -> None:
        """Bring one mirror up to the newest record we hold for it. Only one follower
        runs per repo (``_following``); the lock (shared with restores) is held only
        while git touches the mirror, never during a fetch."""
        lock = self.lock_for(key)
        mirror = Mirror(mirror_path(self.root, *key))
        try:
            while self.allowed and self.policy.opted_in(key[1]):
                async with lock:
                    state = await trio.to_thread.run_sync(mirror.state)
                rec = next_to_apply(self.records.get(key, {}).values(), state.seq)
                if rec is None:
                    return
                try:
                    path = await self._obtain(rec)
                    if path is None:
                        return  # no source yet; the next round retries
                    async with lock:
                        done = await trio.to_thread.run_sync(mirror.apply, rec, path, time.time())
                except RecordRejected as exc:
                    self._reject(key[0], f"{rec.project} seq {rec.seq}: {exc}")
                    self.records.get(key, {}).pop(rec.seq, None)
                    self._save()
                    continue
                self.stats.applied += 1
                self._prune(key, done.seq)
                self._save()
                self.problems.pop(key, None)
                log.info(
                    "gitback: mirror %s/%s/%s at seq %d (%s, %d refs moved, %d backed up)",
                    *key,
                    done.seq,
                    done.kind,
                    len(done.moved),
                    len(done.backed_up),
                )
        except GitError as exc:
            self._problem(key, str(exc))
        except OSError as exc:
            self._problem(key, f"mirror: {exc}")
        finally:
            self._following.discard(key)

    async def _obtain(self, rec: Record) -> Path | None:
        """The record's bundle in our store: checked against the record, then fetched."""
        key = rec.repo
        path = await trio.to_thread.run_sync(self.store.blob_path, rec.blob)
        if path is not None:
            held = await trio.to_thread.run_sync(self.store.info, rec.blob)
            problem = blob_problem(held, rec) if held is not None else "no info"
            if problem is not None:
                raise RecordRejected(f"the bundle held here does not fit the record: {problem}")
            return path
        if rec.size_bytes > self.config.max_bundle_bytes:
            raise RecordRejected(
                f"{rec.size_bytes} bytes is over this envoy's limit {self.config.max_bundle_bytes}"
            )
        info = await self._info_from_peers(rec)
        if info is None:
            self._problem(key, f"seq {rec.seq}: no allowed peer offers its bundle yet")
            return None
        fetcher = Fetcher(
            PrefixedDialer(self.node, BLOBS).as_node(),
            self.store,
            info,
            self.config.transfer,
            peers=self.allowed_peers,
        )
        fetched: Path | None = None
        try:
            fetched = await fetcher.fetch()
        except* BlobError as group:
            self._problem(key, f"seq {rec.seq}: {group.exceptions[0]}")
        return fetched

    async def _info_from_peers(self, rec: Record) -> BlobInfo | None:
        def mismatch(peer: PeerView, why: str) -> None:
            self._reject(str(peer.uuid), f"the bundle of {rec.project} seq {rec.seq}: {why}")

        return await info_from_peers(
            self.node,
            self.allowed_peers(),
            rec.blob,
            lambda info: blob_problem(info, rec),
            mismatch,
            base=BLOBS,
        )

    def _collect(self) -> None:
        for sha in self.store.gc(self._referenced(), ()):
            log.debug("gitback: collected blob %s", sha[:12])

    # -------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._scanner)
            nursery.start_soon(self._puller)
            task_status.started()
            while True:
                wake = self._wake
                if self.allowed:
                    for key in self._behind():
                        if self.policy.opted_in(key[1]):
                            self._following.add(key)
                            nursery.start_soon(self._follow, key)
                with trio.move_on_after(self.config.pull_interval_s):
                    await wake.wait()

    async def _scanner(self) -> None:
        while True:
            try:
                await self.scan_once()
            except Exception:  # last line of defence: one bad pass never stops gitback
                log.exception("gitback: a scan failed unexpectedly")
            await trio.sleep(self.config.scan_interval_s)

    async def _puller(self) -> None:
        while True:
            if self.allowed:
                async with trio.open_nursery() as nursery:
                    for peer in self.allowed_peers():
                        nursery.start_soon(self.pull_from, peer)
            await trio.sleep(self.config.pull_interval_s)

    # ------------------------------------------------------------------ views

    def mirrors_view(self, person: str | None = None) -> list[dict[str, Any]]:
        """The mirrors this envoy holds (of ``person`` only, when given)."""
        out = []
        for key, recs in sorted(self.records.items()):
            seeder, user, project = key
            if seeder == self.me or (person is not None and user != person):
                continue
            path = mirror_path(self.root, *key)
            newest = max(recs) if recs else 0
            out.append(
                {
                    "seeder": seeder,
                    "seeder_hostname": self.hostnames.get(seeder),
                    "person": user,
                    "project": project,
                    "newest_seq": newest,
                    "path": str(path),
                    "problem": self.problems.get(key, ""),
                }
            )
        return out

    def published_view(self, person: str | None = None) -> list[dict[str, Any]]:
        out = []
        for (user, project), s in sorted(self.seeded.items()):
            if person is not None and user != person:
                continue
            last = self.records.get((self.me, user, project), {}).get(s.seq)
            out.append(
                {"person": user, "project": project, "seq": s.seq, "refs": len(s.tips),
                 "kind": last.kind if last else "", "size_bytes": last.size_bytes if last else 0,
                 "problem": self.problems.get((user, project), "")}
            )  # fmt: skip
        for key, problem in sorted(self.problems.items()):
            if len(key) == 2 and key not in self.seeded and (person is None or key[0] == person):
                out.append({"person": key[0], "project": key[1], "seq": 0, "refs": 0,
                            "kind": "", "size_bytes": 0, "problem": problem})  # fmt: skip
        return out

    def status(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "patterns": list(self.policy.patterns),
            "people": sorted(self.policy.users),
            "stats": dataclasses.asdict(self.stats),
            "mirrors": len([k for k in self.records if k[0] != self.me]),
            "published": len(self.seeded),
        }
