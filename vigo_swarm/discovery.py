"""Multicast discovery on UDP 224.0.0.42:1531: announce ourselves, hear others.

Thin trio driver around ``announce`` (the codec) — every decision about what a heard
announcement means is the peer table's. Several processes on one host can bind the
port (``SO_REUSEADDR``/``SO_REUSEPORT``) and each receives every datagram.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import trio

from .announce import MAX_PACKET_BYTES, AnnounceError, Announcement

log = logging.getLogger(__name__)

A = TypeVar("A")
OnAnnouncement = Callable[[Announcement, str], None]  # (announcement, source address)


class Encodable(Protocol):
    def encode(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    group: str = "224.0.0.42"
    port: int = 1531
    interface_address: str = ""  # "" = let the kernel pick (the multicast route)
    announce_interval_s: float = 5.0
    min_gap_s: float = 0.5  # rate limit on triggered announcements
    ttl: int = 1  # link-local: never routed off the segment


@dataclass(slots=True)
class DiscoveryStats:
    sent: int = 0
    send_errors: int = 0
    received: int = 0
    bad_packets: int = 0
    last_bad_reason: str = ""
    unavailable: str = ""


class MulticastDiscovery(Generic[A]):
    """Announce and listen on one group; ``decode`` is the group's codec (it raises
    ``AnnounceError`` or a subclass). Longdrawer runs a second one on its own group."""

    def __init__(
        self,
        config: DiscoveryConfig,
        make_announcement: Callable[[], Encodable],
        on_announcement: Callable[[A, str], None],
        decode: Callable[[bytes], A],
    ) -> None:
        self.config = config
        self._make = make_announcement
        self._on = on_announcement
        self._decode = decode
        self.stats = DiscoveryStats()
        self._poke = trio.Event()
        self._sock: trio.socket.SocketType | None = None

    def poke(self) -> None:
        """Announce soon (a newcomer appeared: let it learn about us quickly)."""
        self._poke.set()

    def _open_socket(self) -> trio.socket.SocketType:
        cfg = self.config
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        iface = socket.inet_aton(cfg.interface_address or "0.0.0.0")  # noqa: S104 (INADDR_ANY: kernel picks)
        mreq = struct.pack("4s4s", socket.inet_aton(cfg.group), iface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg.ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        if cfg.interface_address:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        return sock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            sock = self._open_socket()
        except OSError as exc:
            # No multicast route or interface: the swarm still works on server hints.
            self.stats.unavailable = f"cannot join {self.config.group}: {exc.strerror or exc}"
            log.warning(
                "multicast discovery unavailable (%s); relying on server hints",
                self.stats.unavailable,
            )
            task_status.started()
            return
        with sock:
            await sock.bind(("", self.config.port))
            self._sock = sock
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, sock)
                nursery.start_soon(self._announce_loop, sock)
                task_status.started()

    async def _send(self, sock: trio.socket.SocketType) -> None:
        try:
            await sock.sendto(self._make().encode(), (self.config.group, self.config.port))
            self.stats.sent += 1
        except (OSError, AnnounceError) as exc:
            self.stats.send_errors += 1
            log.debug("multicast announce failed: %s", exc)

    async def _announce_loop(self, sock: trio.socket.SocketType) -> None:
        while True:
            await self._send(sock)
            self._poke = trio.Event()
            # ±20% jitter so a fleet started at once does not announce in lockstep
            interval = self.config.announce_interval_s * random.uniform(0.8, 1.2)
            with trio.move_on_after(interval):
                await trio.sleep(self.config.min_gap_s)
                await self._poke.wait()

    async def _listen(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, addr = await sock.recvfrom(MAX_PACKET_BYTES + 1)
            except OSError as exc:
                log.debug("multicast receive error: %s", exc)
                continue
            self.stats.received += 1
            try:
                announcement = self._decode(data)
            except AnnounceError as exc:
                self.stats.bad_packets += 1
                self.stats.last_bad_reason = str(exc)
                log.debug("ignored datagram from %s: %s", addr[0], exc)
                continue
            self._on(announcement, addr[0])
