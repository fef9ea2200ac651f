"""Blob transfer over the peer channel: serve chunks, and fetch a blob from many peers.

Serving (routes on the node's router; every caller is a verified, unrevoked envoy):

    GET /swarm/v1/blobs/<sha256>/info           BlobInfo JSON (complete or partial here)
    GET /swarm/v1/blobs/<sha256>/have           bitmap of verified chunks (octet-stream)
    GET /swarm/v1/blobs/<sha256>/chunks/<index> the chunk's bytes, re-verified before sending

Fetching (``Fetcher.fetch``): the pure ``ChunkScheduler`` decides which chunk to ask
which peer for (rarest first, pipelined through several connections per peer, endgame,
penalties); this module only moves bytes. Every chunk is verified by the store before
it is marked; a bad chunk penalizes its peer and goes back to missing; the whole blob is
verified before it becomes visible. Peers' bitmaps are refreshed while fetching, so
chunks flow between downloaders, not only from the seed.
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from . import http11
from .blobstore import (
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    ChunkMismatch,
    InvalidHash,
    Partial,
    StoreFull,
    check_sha256,
    decode_bitmap,
)
from .node import SwarmNode
from .peers import PeerView
from .scheduler import ChunkScheduler, SchedulerConfig

log = logging.getLogger(__name__)

OCTETS = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class TransferConfig:
    connections_per_peer: int = 2
    refresh_have_s: float = 0.25
    chunk_timeout_s: float = 30.0
    idle_wait_s: float = 0.2


@dataclass(slots=True)
class FetchProgress:
    sha256: str
    total_chunks: int
    have_chunks: int = 0
    bytes_in: int = 0
    bad_chunks: int = 0
    sources: dict[str, int] = field(default_factory=dict)  # peer uuid -> chunks received
    error: str = ""


def register_blob_routes(node: SwarmNode, store: BlobStore) -> None:
    """Add the three blob endpoints to the peer channel."""

    def sha_of(request: http11.Request) -> str:
        try:
            return check_sha256(request.params["sha"])
        except InvalidHash as exc:
            raise http11.HTTPError(400, "bad_hash", str(exc)) from exc

    async def info(request: http11.Request) -> http11.Response:
        found = await trio.to_thread.run_sync(store.info, sha_of(request))
        if found is None:
            raise http11.HTTPError(404, "no_blob", "this envoy holds no such blob")
        return http11.Response(body=found.to_json())

    async def have(request: http11.Request) -> http11.Response:
        bitmap = await trio.to_thread.run_sync(store.have, sha_of(request))
        if bitmap is None:
            raise http11.HTTPError(404, "no_blob", "this envoy holds no such blob")
        return http11.Response(body=bitmap, content_type=OCTETS)

    async def chunk(request: http11.Request) -> http11.Response:
        sha, raw = sha_of(request), request.params["index"]
        if not raw.isdigit() or len(raw) > 9:
            raise http11.HTTPError(400, "bad_index", "chunk index must be a small integer")
        try:
            data = await trio.to_thread.run_sync(store.read_chunk, sha, int(raw))
        except BlobNotFound as exc:
            raise http11.HTTPError(404, "no_chunk", str(exc)) from exc
        except BlobError as exc:
            raise http11.HTTPError(409, "chunk_unavailable", str(exc)) from exc
        return http11.Response(body=data, content_type=OCTETS)

    base = "/swarm/v1/blobs/{sha}"
    node.router.add("GET", base + "/info", info, max_body=0)
    node.router.add("GET", base + "/have", have, max_body=0)
    node.router.add("GET", base + "/chunks/{index}", chunk, max_body=0)


class Fetcher:
    """Fetch one blob from every peer that has chunks of it."""

    def __init__(
        self,
        node: SwarmNode,
        store: BlobStore,
        info: BlobInfo,
        config: TransferConfig | None = None,
        *,
        peers: Callable[[], list[PeerView]] | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.info = info
        self.config = config or TransferConfig()
        self._peers = peers or node.peers
        self.progress = FetchProgress(info.sha256, info.num_chunks)
        self._wake = trio.Event()
        self._done = trio.Event()

    async def fetch(self) -> Path:
        """Fetch until complete; returns the complete blob's path. Raises StoreFull."""
        partial = await trio.to_thread.run_sync(self.store.begin, self.info)
        missing = set(partial.missing())
        have = set(range(self.info.num_chunks)) - missing
        self.progress.have_chunks = len(have)
        sched: ChunkScheduler[uuid.UUID] = ChunkScheduler(
            self.info.num_chunks,
            have,
            SchedulerConfig(
                max_in_flight=self.config.connections_per_peer,
                request_timeout_s=self.config.chunk_timeout_s,
            ),
        )
        if not sched.done():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._peer_manager, sched, partial, nursery)
                await self._done.wait()
                nursery.cancel_scope.cancel()
        return await trio.to_thread.run_sync(partial.complete)

    async def _peer_manager(
        self, sched: ChunkScheduler[uuid.UUID], partial: Partial, nursery: trio.Nursery
    ) -> None:
        running: set[uuid.UUID] = set()
        while True:
            now = trio.current_time()
            for peer_id, index in sched.expired_requests(now):
                sched.on_timeout(peer_id, index, now)
            for peer in self._peers():
                if peer.uuid not in running:
                    running.add(peer.uuid)
                    nursery.start_soon(self._peer_loop, peer, sched, partial, running)
            with trio.move_on_after(self.config.refresh_have_s):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _peer_loop(
        self,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        partial: Partial,
        running: set[uuid.UUID],
    ) -> None:
        """One peer: keep its bitmap fresh and run a few connections pulling chunks."""
        try:
            queue: collections.deque[int] = collections.deque()  # handed out, not yet asked
            async with trio.open_nursery() as nursery:
                conn = await self.node.dial(peer)
                nursery.start_soon(self._refresh_have, conn, peer, sched)
                for _ in range(self.config.connections_per_peer):
                    nursery.start_soon(self._worker, peer, sched, partial, queue)
        except* (http11.ClientError, trio.TooSlowError) as group:
            # a broken or misbehaving peer ends only its own loop (trio raises groups)
            log.debug("fetch %s from %s: %s", self.info.sha256[:12], peer.uuid, group.exceptions[0])
        finally:
            for index in sched.drop_peer(peer.uuid):
                log.debug("chunk %d from %s back to missing", index, peer.uuid)
            running.discard(peer.uuid)

    async def _refresh_have(
        self, conn: http11.HTTPSConnection, peer: PeerView, sched: ChunkScheduler[uuid.UUID]
    ) -> None:
        async with conn:
            while True:
                resp = await conn.request("GET", f"/swarm/v1/blobs/{self.info.sha256}/have")
                if resp.status == 200:
                    try:
                        chunks = decode_bitmap(resp.body, self.info.num_chunks)
                    except BlobError as exc:
                        raise http11.ClientError(f"bad bitmap: {exc}") from exc
                    sched.set_peer_chunks(peer.uuid, chunks)
                    self._wake.set()
                elif resp.status != 404:
                    raise http11.ClientError(f"have answered {resp.status}")
                await trio.sleep(self.config.refresh_have_s)

    async def _worker(
        self,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        partial: Partial,
        queue: collections.deque[int],
    ) -> None:
        """One connection: take the peer's next scheduled chunk, fetch it, repeat.

        The scheduler hands out up to the peer's in-flight limit at once; the peer's
        connections share them through ``queue``, one request each at a time.
        """
        async with await self.node.dial(peer) as conn:
            while not sched.done():
                if not queue:
                    queue.extend(sched.next_requests(peer.uuid, trio.current_time()))
                if not queue:
                    wake = self._wake
                    with trio.move_on_after(self.config.idle_wait_s):
                        await wake.wait()
                    continue
                await self._get_chunk(conn, peer, sched, partial, queue.popleft())

    async def _get_chunk(
        self,
        conn: http11.HTTPSConnection,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        partial: Partial,
        index: int,
    ) -> None:
        path = f"/swarm/v1/blobs/{self.info.sha256}/chunks/{index}"
        try:
            resp = await conn.request(
                "GET", path, max_body=self.info.chunk_bytes, timeout_s=self.config.chunk_timeout_s
            )
        except http11.ClientError:
            sched.on_timeout(peer.uuid, index, trio.current_time())
            raise
        now = trio.current_time()
        if resp.status != 200:
            sched.on_timeout(peer.uuid, index, now)
            return
        try:
            fresh = await trio.to_thread.run_sync(partial.write_chunk, index, resp.body)
        except ChunkMismatch as exc:
            self.progress.bad_chunks += 1
            log.warning(
                "peer %s served a corrupt chunk %d of %s: %s",
                peer.uuid,
                index,
                self.info.sha256[:12],
                exc,
            )
            sched.on_chunk_bad(peer.uuid, index, now)
            return
        except StoreFull as exc:
            self.progress.error = str(exc)
            raise
        sched.on_chunk_ok(peer.uuid, index, now)
        if fresh:
            self.progress.have_chunks += 1
            self.progress.bytes_in += len(resp.body)
            key = str(peer.uuid)
            self.progress.sources[key] = self.progress.sources.get(key, 0) + 1
        self._wake.set()
        if sched.done():
            self._done.set()
