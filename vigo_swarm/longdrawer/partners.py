"""Finding a person's partners: the envoys that hold the same person's folder.

A multicast announcement or a ``cross_subnet_peers`` entry is only a hint. An envoy
becomes a *partner* for a person only after an mTLS ``hello`` with it (its
certificate names its UUID, not revoked) shows it holds the same person id — and only
if it announced that person on our multicast group (same LAN segment) or sits at an
address the person's ``cross_subnet_peers`` lists. Both sides of the ``hello`` live
here; a multicast partner not heard for a while is dropped.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import MutableMapping

import trio

from .. import http11, pki
from ..node import SwarmNode
from .announce import Announcement
from .config import LongdrawerConfig
from .routes import HELLO_PATH, REQUEST_TIMEOUT_S, decode_json
from .state import Heard, Partner, PersonSync
from .store import IndexStore

log = logging.getLogger(__name__)


class PartnerFinder:
    """Confirms partners for the people in ``people`` (the service's live map of
    person id → ``PersonSync``) and records them in each ``PersonSync.partners``.
    Start ``run`` with ``nursery.start`` before anything is confirmed."""

    def __init__(
        self,
        node: SwarmNode,
        people: MutableMapping[str, PersonSync],
        index: IndexStore,
        config: LongdrawerConfig,
    ) -> None:
        self.node = node
        self.people = people
        self.index = index
        self.config = config
        ident = node.identity
        self._client_ctx = pki.client_context(
            ident.ca_file, cert_file=ident.cert_file, key_file=ident.key_file
        )
        self._heard: dict[uuid.UUID, Heard] = {}
        self._confirming: set[tuple[uuid.UUID | None, str, int]] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owns the hello tasks started by ``start_confirm``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def on_announcement(self, ann: Announcement, source: str) -> None:
        if ann.uuid == self.node.identity.uuid:
            return
        now = trio.current_time()
        self._heard[ann.uuid] = Heard(source, ann.port, dict(ann.people), now)
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
            answer = decode_json(resp.body, "hello")
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

    async def hello(self, request: http11.Request) -> http11.Response:
        """POST /longdrawer/v1/hello: our seqs for the people asked about."""
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

    def expire(self, ps: PersonSync, now: float) -> None:
        """Drop multicast partners not heard for three intervals."""
        ttl = max(3 * self.config.announce_interval_s, 3 * self.config.pull_interval_s)
        for peer, partner in list(ps.partners.items()):
            if partner.via == "multicast" and now - partner.last_heard > ttl:
                log.info("longdrawer: %s: partner %s not heard; dropped", ps.person.login, peer)
                del ps.partners[peer]

    async def cross_subnet_loop(self, ps: PersonSync) -> None:
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
