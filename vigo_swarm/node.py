"""The swarm node: the peer channel server on TCP 1531, discovery, and peer confirmation.

One ``SwarmNode`` per envoy, started by the daemon with ``await nursery.start(node.run)``.
It owns the ``PeerTable`` (pure) and drives it:

- hints arrive from multicast (``MulticastDiscovery``) and from the server's check-in
  answer (``add_server_hints``);
- the prober dials each due candidate over mTLS, checks that the verified certificate
  names the hinted UUID and is not revoked, and only then confirms it;
- the peer channel refuses revoked certificates on every request (``apply_revocations``
  is fed by check-in), and refuses the server lite's certificate: only envoys talk here.

Content subsystems add their endpoints to ``node.router`` before ``run`` starts.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import http11, pki
from .announce import Announcement, decode
from .discovery import DiscoveryConfig, MulticastDiscovery
from .peers import PeerTable, PeerView, Probe, Source, TableConfig

log = logging.getLogger(__name__)

IDENTITY_PATH = "/swarm/v1/identity"
PORT_HEADER = "x-vigo-peer-port"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    uuid: uuid.UUID
    hostname: str
    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    listen_address: str = ""  # "" = every address
    port: int = 1531
    advertise_addresses: tuple[str, ...] = ()  # () = detect from the interfaces
    multicast_enabled: bool = True
    server_hints_enabled: bool = True
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    table: TableConfig = field(default_factory=TableConfig)
    probe_concurrency: int = 16
    probe_timeout_s: float = 5.0
    prober_tick_s: float = 0.5


@dataclass(frozen=True, slots=True)
class ServerHint:
    uuid: uuid.UUID
    hostname: str | None
    addresses: tuple[str, ...]
    port: int


@dataclass(slots=True)
class NodeStats:
    probes: int = 0
    probe_failures: int = 0
    confirmed_total: int = 0
    spoofed: int = 0  # handshake showed another UUID than the hint claimed
    server_hints: int = 0


def detect_addresses() -> tuple[str, ...]:
    """Non-loopback IPv4 addresses of interfaces that are up."""
    import psutil  # lazy: only needed when nothing is configured

    stats = psutil.net_if_stats()
    found = []
    for name, addrs in psutil.net_if_addrs().items():
        if name == "lo" or not stats.get(name) or not stats[name].isup:
            continue
        found += [a.address for a in addrs if a.family == 2 and not a.address.startswith("127.")]
    return tuple(found) or ("127.0.0.1",)


class SwarmNode:
    def __init__(self, identity: NodeIdentity, config: SwarmConfig) -> None:
        self.identity = identity
        self.config = config
        self.table = PeerTable(identity.uuid, config.table)
        self.stats = NodeStats()
        self.manifest_version = 0
        self.revoked_serials: set[int] = set()
        self.advertise = config.advertise_addresses or detect_addresses()
        self.port = config.port
        self.router = http11.Router()
        self.router.add("GET", IDENTITY_PATH, self._identity_handler)
        self._client_ctx: ssl.SSLContext = pki.client_context(
            identity.ca_file, cert_file=identity.cert_file, key_file=identity.key_file
        )
        self._server_ctx = pki.server_context(
            identity.cert_file, identity.key_file, identity.ca_file
        )
        self.tls_sessions = http11.TLSSessions()  # resumed by every dial to a peer
        self._wake = trio.Event()
        self._discovery: MulticastDiscovery[Announcement] | None = None
        self.server: http11.HTTPSServer | None = None
        self.started_at = 0.0

    # ------------------------------------------------------------- peer channel

    def admit(self, peer: pki.PeerIdentity | None) -> str | None:
        if peer is None:
            return "a client certificate is required"
        if peer.is_server or peer.uuid is None:
            return "only envoy certificates may use the peer channel"
        if peer.serial in self.revoked_serials or self.table.is_revoked(peer.uuid):
            return "certificate revoked"
        return None

    async def _identity_handler(self, request: http11.Request) -> http11.Response:
        # A verified envoy that dials us tells us its peer-channel port: a hint as good
        # as an announcement (and better: the certificate already names it). It still
        # becomes a peer only through our own probe of that address and port.
        port = request.headers.get(PORT_HEADER, "")
        peer = request.peer
        valid_port = port.isdigit() and 0 < int(port) < 65536
        if peer is not None and peer.uuid is not None and valid_port:
            now = trio.current_time()
            if self.table.hint(peer.uuid, request.remote, int(port), Source.INBOUND, now):
                self._wake.set()
        return http11.json_response(
            {
                "uuid": str(self.identity.uuid),
                "hostname": self.identity.hostname,
                "port": self.port,
                "manifest_version": self.manifest_version,
                "you": str(request.peer.uuid) if request.peer else None,
            }
        )

    # ------------------------------------------------------------------ inputs

    def _announcement(self) -> Announcement:
        return Announcement(self.identity.uuid, self.advertise, self.port, self.manifest_version)

    def _on_announcement(self, ann: Announcement, source: str) -> None:
        # Probe the address the datagram came from, never the addresses it claims:
        # a forged announcement must not aim our dialler at a third party.
        known = ann.uuid in self.table.confirmed()
        if self.table.hint(
            ann.uuid,
            source,
            ann.port,
            Source.MULTICAST,
            trio.current_time(),
            manifest_version=ann.manifest_version,
        ):
            self._wake.set()
        if not known and ann.uuid != self.identity.uuid and self._discovery is not None:
            self._discovery.poke()

    def add_server_hints(self, hints: Iterable[ServerHint]) -> None:
        if not self.config.server_hints_enabled:
            return
        now = trio.current_time()
        for hint in hints:
            self.stats.server_hints += 1
            for address in hint.addresses:
                if self.table.hint(hint.uuid, address, hint.port, Source.SERVER, now):
                    self._wake.set()

    def apply_revocations(self, serials: Iterable[int], uuids: Iterable[uuid.UUID]) -> None:
        self.revoked_serials.update(serials)
        for gone in self.table.revoke(uuids):
            log.warning("peer %s revoked by the server: dropped", gone)

    def announce_soon(self) -> None:
        """Our manifest changed: tell the LAN now rather than at the next interval."""
        if self._discovery is not None:
            self._discovery.poke()

    async def dial(self, peer: PeerView) -> http11.HTTPSConnection:
        """An mTLS connection to a confirmed peer, its certificate checked to be that peer.

        Subsystems use this for every request to a peer; it refuses revoked certificates.
        """
        if peer.address is None or peer.port is None:
            raise http11.ClientError(f"peer {peer.uuid} has no confirmed address")
        conn = await http11.connect(
            peer.address,
            peer.port,
            self._client_ctx,
            expect_uuid=peer.uuid,
            timeout_s=self.config.probe_timeout_s,
            local_address=self.config.listen_address or None,
            sessions=self.tls_sessions,
        )
        if conn.peer.serial in self.revoked_serials:
            await conn.aclose()
            raise http11.ClientError(f"peer {peer.uuid}: its certificate is revoked")
        return conn

    # ------------------------------------------------------------------ prober

    async def _probe(self, probe: Probe, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            self.stats.probes += 1
            try:
                async with await http11.connect(
                    probe.address,
                    probe.port,
                    self._client_ctx,
                    expect_uuid=probe.uuid,
                    timeout_s=self.config.probe_timeout_s,
                    local_address=self.config.listen_address or None,
                    sessions=self.tls_sessions,
                ) as conn:
                    if conn.peer.serial in self.revoked_serials:
                        raise http11.ClientError("its certificate is revoked")
                    resp = await conn.request(
                        "GET",
                        IDENTITY_PATH,
                        headers={PORT_HEADER: str(self.port)},
                        timeout_s=self.config.probe_timeout_s,
                    )
                    if resp.status != 200:
                        raise http11.ClientError(f"identity answered {resp.status}")
                    info = resp.json()
            except http11.PeerIdentityMismatch as exc:
                self.stats.spoofed += 1
                self._probe_failed(probe, f"identity mismatch: {exc}")
                return
            except http11.ClientError as exc:
                self._probe_failed(probe, str(exc))
                return
            mv = info.get("manifest_version") if isinstance(info, dict) else None
            if self.table.probe_ok(
                probe,
                trio.current_time(),
                hostname=conn.peer.hostname,
                manifest_version=mv if isinstance(mv, int) else None,
            ):
                self.stats.confirmed_total += 1
                log.info(
                    "peer %s (%s) confirmed over mTLS at %s:%d",
                    conn.peer.hostname,
                    probe.uuid,
                    probe.address,
                    probe.port,
                )

    def _probe_failed(self, probe: Probe, reason: str) -> None:
        self.stats.probe_failures += 1
        log.debug("probe of %s at %s failed: %s", probe.uuid, probe.address, reason)
        self.table.probe_failed(probe, trio.current_time(), reason)

    async def _prober(self) -> None:
        limiter = trio.CapacityLimiter(self.config.probe_concurrency)
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                for probe in self.table.due_probes(now):
                    nursery.start_soon(self._probe, probe, limiter)
                for gone in self.table.expire(now):
                    log.info("peer %s expired (no hint or confirmation)", gone)
                self._wake = trio.Event()
                with trio.move_on_after(self.config.prober_tick_s):
                    await self._wake.wait()

    # --------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.started_at = trio.current_time()
        self.server = http11.HTTPSServer(
            self.router,
            self._server_ctx,
            host=self.config.listen_address,
            port=self.config.port,
            admit=self.admit,
            name="peer-channel",
        )
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(self.server.run)
            if self.config.multicast_enabled:
                self._discovery = MulticastDiscovery(
                    self.config.discovery, self._announcement, self._on_announcement, decode
                )
                await nursery.start(self._discovery.run)
            nursery.start_soon(self._prober)
            task_status.started(self.port)

    # ------------------------------------------------------------------- views

    def peers(self, *, include_candidates: bool = False) -> list[PeerView]:
        views = self.table.snapshot(trio.current_time())
        return views if include_candidates else [v for v in views if v.confirmed]

    def status(self) -> dict[str, Any]:
        views = self.table.snapshot(trio.current_time())
        return {
            "uuid": str(self.identity.uuid),
            "hostname": self.identity.hostname,
            "port": self.port,
            "advertise": list(self.advertise),
            "manifest_version": self.manifest_version,
            "peers_confirmed": sum(1 for v in views if v.confirmed),
            "candidates": sum(1 for v in views if not v.confirmed),
            "multicast": None if self._discovery is None else vars_of(self._discovery.stats),
            "peer_channel": None if self.server is None else vars_of(self.server.stats),
            "node": vars_of(self.stats),
            "revoked_serials": len(self.revoked_serials),
        }


def vars_of(obj: Any) -> dict[str, Any]:
    """A slots dataclass as a dict (stats for JSON)."""
    return {name: getattr(obj, name) for name in obj.__slots__}
