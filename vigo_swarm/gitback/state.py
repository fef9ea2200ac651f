"""What the gitback service holds and how it keeps it: its configuration and counters,
the records it holds (per repo, by seq; ``accept`` takes a peer's, only from their
seeder), what this envoy last seeded, the policy from check-in, the problems each repo
or project waits on, and ``state.json`` (``GitbackState``). The routes, the publishing
side and the mirror side (routes.py, publisher.py, follower.py) build on it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..blobstore import BlobStore
from ..node import SwarmNode
from ..peers import PeerView
from ..pki import write_public_file
from ..puddle import Person
from ..transfer import TransferConfig
from .policy import DENY_ALL, GitbackPolicy
from .records import Record, RecordRejected, from_wire, keep_from

# The service's parts log under one name, the one gitback has always logged as.
log = logging.getLogger("vigo_swarm.gitback.service")

MAX_RECORDS_PER_MESSAGE = 10_000


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


class GitbackState:
    """The state ``GitbackService`` and its parts (``PeerRoutes``, ``Publisher``,
    ``Follower``) share; they are its bases, so all work on one object."""

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
        self._add_routes()

    def _add_routes(self) -> None:
        """Register the peer routes (``PeerRoutes`` does; the bare state has none)."""

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

    def _problem(self, key: tuple[str, ...], message: str) -> None:
        if self.problems.get(key) != message:
            log.warning("gitback: %s: %s", "/".join(key), message)
        self.problems[key] = message

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

    def own_records(self) -> list[Record]:
        return [r for key, recs in self.records.items() if key[0] == self.me for r in recs.values()]

    def _referenced(self) -> set[str]:
        return {r.blob for recs in self.records.values() for r in recs.values()}

    def _collect(self) -> None:
        for sha in self.store.gc(self._referenced(), ()):
            log.debug("gitback: collected blob %s", sha[:12])
