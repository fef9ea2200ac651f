"""Check-in: report our addresses to the server lite; learn peer hints and revocations.

The loop never stops the daemon: while the server is down it backs off exponentially
(with jitter, capped) and the swarm keeps running on what it already knows — the last
revocation list is persisted so a restart applies it before the first check-in.

``parse_answer`` and ``next_delay_s`` are pure; ``CheckinService`` does the IO with our
own HTTP/1.1 client (``vigo_swarm.http11``), which checks that the far end presents
the server lite's certificate from our fleet CA.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from vigo_swarm import ServerHint, SwarmNode, http11, pki
from vigo_swarm.gitback.policy import GitbackPolicy, PolicyError, policy_from_wire
from vigo_swarm.gossip import ManifestGossip, decode_records
from vigo_swarm.manifest import MalformedSummary, summary_to_wire
from vigo_swarm.pki import write_public_file

log = logging.getLogger(__name__)

CHECKIN_PATH = "/api/v1/checkin"
MANIFEST_SYNC_PATH = "/api/v1/swarm/manifest/sync"
MANIFEST_WATCH_PATH = "/api/v1/swarm/manifest/watch"
WATCH_WAIT_S = 45.0  # how long the server may hold a manifest watch (it allows 50)
PROGRESS_STATES = {"missing", "partial", "complete", "materialized", "error"}


class CheckinError(Exception):
    """A check-in failed; the message says why (unreachable, refused, bad answer)."""


@dataclass(frozen=True, slots=True)
class CheckinAnswer:
    peers: tuple[ServerHint, ...]
    revoked_serials: frozenset[int]
    revoked_uuids: frozenset[uuid.UUID]
    interval_s: float | None
    manifest_version: int | None = None
    gitback: GitbackPolicy | None = None  # None: the server said nothing (keep as is)


def parse_answer(obj: Any) -> CheckinAnswer:
    """Validate the server's answer; anything malformed is a ``CheckinError``."""
    try:
        peers = tuple(
            ServerHint(
                uuid=uuid.UUID(str(p["uuid"])),
                hostname=str(p["hostname"]) if p.get("hostname") else None,
                addresses=tuple(str(a) for a in p["addresses"][:32]),
                port=int(p["port"]),
            )
            for p in obj.get("peers", [])
        )
        revoked = obj.get("revoked", {})
        serials = frozenset(int(str(s), 16) for s in revoked.get("serials", []))
        uuids = frozenset(uuid.UUID(str(u)) for u in revoked.get("uuids", []))
        interval = obj.get("checkin_interval_s")
        interval_s = float(interval) if interval is not None else None
        mv = obj.get("manifest_version")
        if mv is not None and (not isinstance(mv, int) or isinstance(mv, bool)):
            raise ValueError("manifest_version must be an integer")
        gitback = obj.get("gitback")
        policy = None if gitback is None else policy_from_wire(gitback)
    except (AttributeError, KeyError, TypeError, ValueError, PolicyError) as exc:
        raise CheckinError(f"malformed check-in answer: {exc}") from exc
    return CheckinAnswer(peers, serials, uuids, interval_s, mv, policy)


def progress_report(blobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pure: the daemon's filecast status as the server's check-in schema wants it."""
    report = []
    for b in blobs[:1000]:
        state = b.get("state") if b.get("state") in PROGRESS_STATES else "error"
        total = max(1, int(b.get("total_chunks", 1)))
        have = min(total, max(0, int(b.get("have_chunks", 0))))
        if state == "missing":
            have = 0
        elif state in ("complete", "materialized"):
            have = total
        item: dict[str, Any] = {
            "blob": b["blob"],
            "have_chunks": have,
            "total_chunks": total,
            "state": state,
        }
        error = "".join(ch for ch in str(b.get("error", "")) if ch.isprintable())[:500]
        if error:
            item["error"] = error
        report.append(item)
    return report


def next_delay_s(interval_s: float, failures: int, backoff_max_s: float, rand: float) -> float:
    """Seconds to the next check-in. ``rand`` ∈ [0, 1) supplies the splay.

    Success: the interval ±10 %. After ``failures`` consecutive failures: 1, 2, 4 … s,
    capped at ``backoff_max_s``, with up to 25 % jitter so a fleet does not stampede a
    server coming back.
    """
    if failures == 0:
        return interval_s * (0.9 + 0.2 * rand)
    base = min(backoff_max_s, float(2 ** min(failures - 1, 30)))
    return base * (0.75 + 0.25 * rand)


@dataclass(slots=True)
class CheckinStats:
    ok: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_ok_unix: float | None = None
    last_error: str = ""
    interval_s: float = 0.0


@dataclass(slots=True)
class CheckinService:
    node: SwarmNode
    server_url: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    revocations_file: Path
    interval_s: float
    interval_fixed: bool = False  # agent.yaml set it: ignore the server's value
    backoff_max_s: float = 300.0
    gossip: ManifestGossip | None = None  # server-signed records arrive through it
    progress: Callable[[], list[dict[str, Any]]] | None = None  # filecast progress
    on_gitback: Callable[[GitbackPolicy], None] | None = None  # gitback's policy changed
    stats: CheckinStats = field(default_factory=CheckinStats)
    _wake: trio.Event = field(default_factory=trio.Event)
    _ctx: ssl.SSLContext | None = None  # built once: the identity files do not change
    _saved: bytes = b""  # the revocation list as last written or read
    _save_failing: bool = False

    def load_saved_revocations(self) -> None:
        try:
            raw = self.revocations_file.read_bytes()
            answer = parse_answer({"revoked": json.loads(raw)})
        except FileNotFoundError:
            return
        except (OSError, ValueError, CheckinError) as exc:
            log.warning("ignoring unreadable %s: %s", self.revocations_file, exc)
            return
        self.node.apply_revocations(answer.revoked_serials, answer.revoked_uuids)
        self._saved = raw

    def trigger(self) -> None:
        """Check in now (e.g. asked through the control socket)."""
        self._wake.set()

    async def connect(self) -> http11.HTTPSConnection:
        """A connection to the server lite with our client certificate; it must present
        the server's certificate from our fleet CA. ``CheckinError`` if it cannot be."""
        url = urlsplit(self.server_url)
        if url.scheme != "https" or not url.hostname:
            raise CheckinError(f"server URL {self.server_url!r} is not https://HOST[:PORT]")
        if self._ctx is None:
            self._ctx = pki.client_context(
                self.ca_file, cert_file=self.cert_file, key_file=self.key_file
            )
        try:
            return await http11.connect(
                url.hostname, url.port or 443, self._ctx, expect_server=True
            )
        except http11.ClientError as exc:
            raise CheckinError(f"server unreachable: {exc}") from exc

    async def checkin_once(self) -> CheckinAnswer:
        report: dict[str, Any] = {
            "addresses": list(self.node.advertise),
            "port": self.node.port,
            "manifest_version": self.node.manifest_version,
            "hostname": self.node.identity.hostname,
        }
        if self.progress is not None:
            report["filecast"] = progress_report(self.progress())
        try:
            async with await self.connect() as conn:
                resp = await conn.request(
                    "POST",
                    CHECKIN_PATH,
                    body=json.dumps(report).encode(),
                    headers={"content-type": "application/json"},
                )
                if resp.status != 200:
                    raise CheckinError(
                        f"server refused check-in ({resp.status}): {server_message(resp)}"
                    )
                try:
                    answer = parse_answer(resp.json())
                except http11.ClientError as exc:
                    raise CheckinError(str(exc)) from exc
                if (
                    self.gossip is not None
                    and answer.manifest_version is not None
                    and answer.manifest_version != self.gossip.manifest.version
                ):
                    await self._sync_manifest(conn)
                return answer
        except http11.ClientError as exc:
            raise CheckinError(f"server unreachable: {exc}") from exc

    async def _sync_manifest(self, conn: http11.HTTPSConnection) -> None:
        """Pull the server's records we lack (read-only: the server takes none from us)."""
        assert self.gossip is not None
        body = json.dumps({"summary": summary_to_wire(self.gossip.manifest.summary())})
        resp = await conn.request(
            "POST",
            MANIFEST_SYNC_PATH,
            body=body.encode(),
            max_body=64 << 20,
            headers={"content-type": "application/json"},
        )
        if resp.status != 200:
            raise CheckinError(f"manifest sync refused ({resp.status}): {server_message(resp)}")
        try:
            answer = resp.json()
            records, bad = decode_records(
                answer.get("records") if isinstance(answer, dict) else None
            )
        except (http11.ClientError, MalformedSummary) as exc:
            raise CheckinError(f"malformed manifest sync answer: {exc}") from exc
        for reason in bad:
            log.warning("refused a record from the server: %s", reason)
        await self.gossip.merge(records, "server")

    def _apply(self, answer: CheckinAnswer) -> None:
        self.node.apply_revocations(answer.revoked_serials, answer.revoked_uuids)
        self.node.add_server_hints(answer.peers)
        if answer.interval_s and not self.interval_fixed:
            self.interval_s = answer.interval_s
        if answer.gitback is not None and self.on_gitback is not None:
            self.on_gitback(answer.gitback)
        saved = {
            "serials": [f"{s:x}" for s in sorted(answer.revoked_serials)],
            "uuids": sorted(str(u) for u in answer.revoked_uuids),
        }
        self._save_revocations(json.dumps(saved).encode())

    def _save_revocations(self, body: bytes) -> None:
        """Persist the list when it changed. A failure (a full disk) is logged once and
        retried at the next check-in; the list is applied in memory either way."""
        if body == self._saved:
            return
        try:
            write_public_file(self.revocations_file, body, 0o600)
        except OSError as exc:
            if not self._save_failing:
                log.warning(
                    "cannot save the revocation list to %s (applied in memory; retrying at "
                    "each check-in): %s",
                    self.revocations_file,
                    exc,
                )
            self._save_failing = True
            return
        self._saved, self._save_failing = body, False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.load_saved_revocations()
        async with trio.open_nursery() as nursery:
            if self.gossip is not None:
                nursery.start_soon(self._watch_manifest)
            task_status.started()
            await self._checkin_loop()

    async def _watch_manifest(self) -> None:
        """Hold a long-poll on the server's manifest version and pull new records the
        moment it moves: a distribution or revocation reaches this envoy in about a
        round trip, not at its next check-in (30 s by default). Check-in still syncs too,
        so a server without the watch (404), or one too busy for it (503), only costs
        that latency."""
        assert self.gossip is not None
        seen, failures = "", 0
        while True:
            try:
                async with await self.connect() as conn:
                    while True:
                        path = f"{MANIFEST_WATCH_PATH}?version={seen}&wait={WATCH_WAIT_S:g}"
                        resp = await conn.request("GET", path, timeout_s=WATCH_WAIT_S + 15)
                        if resp.status == 404:
                            log.info("the server has no manifest watch; check-ins only")
                            return
                        version = _watch_version(resp)
                        if version != self.gossip.manifest.version:
                            await self._sync_manifest(conn)
                        seen, failures = str(version), 0
            except (CheckinError, http11.ClientError) as exc:
                failures += 1
                log.debug("manifest watch: %s (retrying)", exc)
                await trio.sleep(http11.retry_after_s(failures, cap_s=60) * random.uniform(0.5, 1))

    async def _checkin_loop(self) -> None:
        while True:
            try:
                answer = await self.checkin_once()
                self._apply(answer)
            except CheckinError as exc:
                self.stats.failed += 1
                self.stats.consecutive_failures += 1
                self.stats.last_error = str(exc)
                level = (
                    logging.WARNING if self.stats.consecutive_failures in (1, 5) else logging.DEBUG
                )
                log.log(
                    level, "check-in failed (%d in a row): %s", self.stats.consecutive_failures, exc
                )
            else:
                if self.stats.consecutive_failures:
                    log.info(
                        "check-in works again after %d failures", self.stats.consecutive_failures
                    )
                self.stats.ok += 1
                self.stats.consecutive_failures = 0
                self.stats.last_ok_unix = time.time()
                self.stats.last_error = ""
            self.stats.interval_s = self.interval_s
            delay = next_delay_s(
                self.interval_s,
                self.stats.consecutive_failures,
                self.backoff_max_s,
                random.random(),
            )
            self._wake = trio.Event()
            with trio.move_on_after(delay):
                await self._wake.wait()


def _watch_version(resp: http11.ClientResponse) -> int:
    """The version in a manifest watch answer; CheckinError for anything else."""
    if resp.status != 200:
        raise CheckinError(f"manifest watch refused ({resp.status}): {server_message(resp)}")
    try:
        version = resp.json().get("version")
    except (http11.ClientError, AttributeError) as exc:
        raise CheckinError(f"malformed manifest watch answer: {exc}") from exc
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CheckinError(f"malformed manifest watch answer: version {version!r}")
    return version


def server_message(resp: http11.ClientResponse) -> str:
    """``code: message`` of the server's error answer (or the start of its body)."""
    try:
        err = resp.json()["error"]
        return f"{err['code']}: {err['message']}"
    except (http11.ClientError, KeyError, TypeError):
        return resp.body[:200].decode("utf-8", "replace")
