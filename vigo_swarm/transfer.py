"""Blob transfer over the peer channel: serve chunks, and fetch a blob from many peers.

Serving (routes on the node's router; every caller is a verified, unrevoked envoy):

    GET /swarm/v1/blobs/<sha256>/info           BlobInfo JSON (complete or partial here)
    GET /swarm/v1/blobs/<sha256>/have[?after=V&wait=S]
                                                bitmap of verified chunks (octet-stream) and
                                                its version (``x-vigo-have-version``); with
                                                ``after``, a long-poll: answered when the
                                                version differs from V, or after S seconds
    GET /swarm/v1/blobs/<sha256>/chunks/<index> the chunk's bytes, re-verified before sending;
                                                409 ``not_offered`` when super-seeding
                                                hides it from this caller (superseed.py);
                                                with ``x-vigo-have-after: V``, the answer
                                                also says our bitmap's version and, if it
                                                changed since V, the bitmap (``x-vigo-have``)

Fetching (``Fetcher.fetch``): the pure ``ChunkScheduler`` decides which chunk to ask
which peer for (rarest first, one or two connections per peer, endgame,
penalties); this module only moves bytes. Every chunk is verified by the store before
it is marked; a bad chunk penalizes its peer and goes back to missing; the whole blob is
verified before it becomes visible. A fetch learns every peer's bitmap from its chunk
answers, and long-polls it on the same connection while it has nothing to ask of that
peer, so a chunk one downloader verifies is offered to the others within a chunk's
time: chunks flow between downloaders, not only from the seed.

A blob this envoy originates (its seed dir) is served super-seeded (``BlobServer.
superseed``): each chunk goes out to one receiver, which passes it on.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import secrets
import uuid
import weakref
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
from .durable import aligned_buffer
from .node import SwarmNode
from .peers import PeerView
from .ratelimit import Limiter
from .scheduler import ChunkScheduler, SchedulerConfig
from .superseed import SuperSeed

log = logging.getLogger(__name__)

OCTETS = "application/octet-stream"
HAVE_VERSION = "x-vigo-have-version"
HAVE_AFTER = "x-vigo-have-after"  # on a chunk request: the asker's last version of our bitmap
HAVE_BITMAP = "x-vigo-have"  # on a chunk answer: our bitmap (base64) if it changed since
MAX_HAVE_HEADER_BYTES = 4096  # bitmaps up to 32768 chunks ride on chunk answers
MAX_HAVE_WAIT_S = 20.0  # a long-poll never holds a request longer (request timeout: 60 s)


@dataclass(frozen=True, slots=True)
class TransferConfig:
    # Connections pulling chunks from one peer: ``connections_per_peer`` while a fetch
    # has few sources, one each once ``connections_total`` would be exceeded. Two keep a
    # lone source's link busy while one answer is in its queue; with many sources, the
    # others fill those gaps, and each connection more costs a handshake and CPU per byte
    # (bench/filecast.py: T from 7.3 s to 6.9 s with one per peer among eight).
    connections_per_peer: int = 2
    connections_total: int = 4
    refresh_have_s: float = 0.25  # poll interval for a peer that cannot long-poll
    have_wait_s: float = 1.0  # long-poll: the longest a peer holds our bitmap request
    have_min_interval_s: float = 0.2  # between two bitmap long-polls on one connection
    have_stale_s: float = 1.0  # a busy connection asks for the bitmap if none came this long
    chunk_timeout_s: float = 30.0
    fetch_limit: Limiter = field(default_factory=lambda: Limiter(None))  # shared, optional
    idle_wait_s: float = 1.0  # an idle connection looks again at least this often
    manage_every_s: float = 0.5  # new peers joined, requests timed out

    def __post_init__(self) -> None:
        if not 1 <= self.connections_per_peer <= self.connections_total:
            raise ValueError("need 1 <= connections_per_peer <= connections_total")


@dataclass(slots=True)
class FetchProgress:
    sha256: str
    total_chunks: int
    have_chunks: int = 0
    bytes_in: int = 0
    bad_chunks: int = 0
    sources: dict[str, int] = field(default_factory=dict)  # peer uuid -> chunks received
    error: str = ""


class HaveBoard:
    """What changed in a store's bitmaps, for long-polls: one version per blob.

    A version is ``<epoch>.<counter>``; the epoch is random per process, so a peer's
    version from before our restart never matches by accident. Every chunk verified,
    blob completed, seeded or deleted in this process bumps its blob's counter.
    """

    def __init__(self) -> None:
        self._epoch = secrets.token_hex(4)
        self._counters: dict[str, int] = {}
        self._events: dict[str, trio.Event] = {}

    def version(self, sha256: str) -> str:
        return f"{self._epoch}.{self._counters.get(sha256, 0)}"

    def bump(self, sha256: str) -> None:
        self._counters[sha256] = self._counters.get(sha256, 0) + 1
        if (event := self._events.pop(sha256, None)) is not None:
            event.set()

    async def wait_change(self, sha256: str, seen: str, timeout_s: float) -> None:
        """Return when the blob's version is not ``seen`` any more, or after timeout_s."""
        if self.version(sha256) != seen or timeout_s <= 0:
            return
        event = self._events.setdefault(sha256, trio.Event())
        with trio.move_on_after(timeout_s):
            await event.wait()


_boards: weakref.WeakKeyDictionary[BlobStore, HaveBoard] = weakref.WeakKeyDictionary()


def board_for(store: BlobStore) -> HaveBoard:
    """The one HaveBoard of a store (the routes and every fetcher into it share it)."""
    board = _boards.get(store)
    if board is None:
        board = _boards[store] = HaveBoard()
    return board


@dataclass(slots=True)
class ServeStats:
    chunks_served: int = 0
    bytes_served: int = 0
    not_offered: int = 0  # chunk requests declined by super-seeding


class BlobServer:
    """The three blob endpoints on the peer channel, over one store."""

    def __init__(
        self,
        node: SwarmNode,
        store: BlobStore,
        *,
        reveal_after_s: float = 4.0,
        serve_limit: Limiter | None = None,
    ) -> None:
        self.store = store
        self.serve_limit = serve_limit or Limiter(None)
        self.board = board_for(store)
        self.stats = ServeStats()
        self.reveal_after_s = reveal_after_s
        self._superseeded: dict[str, SuperSeed] = {}
        base = "/swarm/v1/blobs/{sha}"
        node.router.add("GET", base + "/info", self._info, max_body=0)
        node.router.add("GET", base + "/have", self._have, max_body=0)
        node.router.add("GET", base + "/chunks/{index}", self._chunk, max_body=0)

    def superseed(self, info: BlobInfo) -> None:
        """We originate this blob: hand each chunk out once (superseed.py)."""
        if info.sha256 not in self._superseeded:
            self._superseeded[info.sha256] = SuperSeed(info.num_chunks, self.reveal_after_s)
            self.board.bump(info.sha256)

    def forget(self, sha256: str) -> None:
        """The blob is gone from the store (collected): long-polls learn it now."""
        self._superseeded.pop(sha256, None)
        self.board.bump(sha256)

    @staticmethod
    def _sha(request: http11.Request) -> str:
        try:
            return check_sha256(request.params["sha"])
        except InvalidHash as exc:
            raise http11.HTTPError(400, "bad_hash", str(exc)) from exc

    async def _info(self, request: http11.Request) -> http11.Response:
        sha, wait_s = self._sha(request), _wait_of(request)
        seen = self.board.version(sha)
        found = await trio.to_thread.run_sync(self.store.info, sha)
        if found is None and wait_s > 0:
            await self.board.wait_change(sha, seen, wait_s)  # long-poll: until it arrives
            found = await trio.to_thread.run_sync(self.store.info, sha)
        if found is None:
            raise http11.HTTPError(404, "no_blob", "this envoy holds no such blob")
        return http11.Response(body=found.to_json())

    async def _have(self, request: http11.Request) -> http11.Response:
        sha = self._sha(request)
        caller = request.peer.uuid if request.peer else None
        after, wait_s = request.query.get("after"), _wait_of(request)
        if after is not None:
            if len(after) > 64:
                raise http11.HTTPError(400, "bad_after", "after must be a have version")
            policy = self._superseeded.get(sha)
            reveal = policy.next_reveal_s(caller, trio.current_time()) if policy else None
            await self.board.wait_change(sha, after, min(wait_s, reveal or wait_s))
        version = self.board.version(sha)
        bitmap = self.store.have_cached(sha)
        if bitmap is None:
            bitmap = await trio.to_thread.run_sync(self.store.have, sha)
        if bitmap is None:
            err = http11.HTTPError(404, "no_blob", "this envoy holds no such blob").response()
            err.headers.append((HAVE_VERSION, version))
            return err
        bitmap = self._shown(sha, caller, bitmap)
        return http11.Response(body=bitmap, content_type=OCTETS, headers=[(HAVE_VERSION, version)])

    def _shown(self, sha: str, caller: uuid.UUID | None, bitmap: bytes) -> bytes:
        """Our bitmap as ``caller`` may see it: super-seeding hides chunks given to others."""
        policy = self._superseeded.get(sha)
        if policy is None:
            return bitmap
        return clear_bits(bitmap, policy.hidden_from(caller, trio.current_time()))

    def _have_headers(
        self, sha: str, caller: uuid.UUID | None, after: str | None
    ) -> list[tuple[str, str]]:
        """What a chunk answer tells about our bitmap, for an asker that last saw version
        ``after`` of it (``x-vigo-have-after``): the version alone if that is still
        current, with the bitmap if it changed (or super-seeding may show it otherwise
        now); nothing if the asker did not ask, or the bitmap is not at hand or too big
        for a header (the asker then polls ``/have``)."""
        if after is None:
            return []
        version = self.board.version(sha)
        policy = self._superseeded.get(sha)
        if version == after and (policy is None or policy.all_given):
            return [(HAVE_VERSION, version)]
        bitmap = self.store.have_cached(sha)
        if bitmap is None or len(bitmap) > MAX_HAVE_HEADER_BYTES:
            return []
        shown = base64.b64encode(self._shown(sha, caller, bitmap)).decode("ascii")
        return [(HAVE_VERSION, version), (HAVE_BITMAP, shown)]

    async def _chunk(self, request: http11.Request) -> http11.Response:
        sha, raw = self._sha(request), request.params["index"]
        if not raw.isdigit() or len(raw) > 9:
            raise http11.HTTPError(400, "bad_index", "chunk index must be a small integer")
        index = int(raw)
        after = request.headers.get(HAVE_AFTER)
        if after is not None and len(after) > 64:
            raise http11.HTTPError(400, "bad_after", f"{HAVE_AFTER} must be a have version")
        policy = self._superseeded.get(sha)
        caller = request.peer.uuid if request.peer else None
        if policy is not None:
            hiding = not policy.all_given
            if not policy.offer(caller, index, trio.current_time()):
                self.stats.not_offered += 1
                declined = http11.HTTPError(
                    409, "not_offered", "super-seeding: another envoy has this chunk; ask it"
                ).response()
                declined.headers += self._have_headers(sha, caller, after)
                return declined
            if hiding and policy.all_given:  # the last new chunk went out: show everything
                self.board.bump(sha)
        try:
            data = await trio.to_thread.run_sync(self.store.read_chunk, sha, index)
        except BlobNotFound as exc:
            raise http11.HTTPError(404, "no_chunk", str(exc)) from exc
        except BlobError as exc:
            raise http11.HTTPError(409, "chunk_unavailable", str(exc)) from exc
        await self.serve_limit.take(len(data))
        self.stats.chunks_served += 1
        self.stats.bytes_served += len(data)
        headers = self._have_headers(sha, caller, after)
        return http11.Response(body=data, content_type=OCTETS, headers=headers)


def clear_bits(bitmap: bytes, indices: list[int]) -> bytes:
    """Pure: ``bitmap`` with the bits of ``indices`` cleared (they must be in range)."""
    if not indices:
        return bitmap
    out = bytearray(bitmap)
    for i in indices:
        out[i >> 3] &= ~(0x80 >> (i & 7)) & 0xFF
    return bytes(out)


def _wait_of(request: http11.Request) -> float:
    """The ``wait`` query parameter: seconds a long-poll may be held (0 if absent)."""
    raw = request.query.get("wait", "0")
    try:
        wait_s = float(raw)
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= MAX_HAVE_WAIT_S:  # also NaN
        raise http11.HTTPError(400, "bad_wait", f"wait must be 0..{MAX_HAVE_WAIT_S:g} seconds")
    return wait_s


def register_blob_routes(node: SwarmNode, store: BlobStore) -> BlobServer:
    """Add the three blob endpoints to the peer channel."""
    return BlobServer(node, store)


@dataclass(slots=True)
class _Advert:
    """What a fetch knows of one peer's bitmap, shared by that peer's connections."""

    version: str = ""  # the peer's have version we last saw ("" before, or if it has none)
    heard_at: float = -math.inf  # when the peer last told us its bitmap or version
    polled_at: float = -math.inf  # when a connection last began a long-poll of it


def connections_per_peer(config: TransferConfig, peers: int) -> int:
    """Pure: how many connections pull chunks from each of ``peers`` sources."""
    return max(1, min(config.connections_per_peer, config.connections_total // max(1, peers)))


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
        ready: dict[uuid.UUID, http11.HTTPSConnection] | None = None,
    ) -> None:
        """``ready``: open connections to peers (``info_from_peers(keep=...)``), used
        before dialing those peers; the fetch closes what it does not use."""
        self.node = node
        self._ready = ready if ready is not None else {}
        self.store = store
        self.info = info
        self.config = config or TransferConfig()
        self._peers = peers or node.peers
        self.progress = FetchProgress(info.sha256, info.num_chunks)
        self.board = board_for(store)
        self._wakes: dict[uuid.UUID, trio.Event] = {}  # per peer: it may have work now
        self._done = trio.Event()

    def _wake(self, peer: uuid.UUID | None = None) -> None:
        """Wake the workers of ``peer`` (its advert changed), or of every peer (a chunk
        went back to missing: anyone who has it may be asked)."""
        for key in [peer] if peer is not None else list(self._wakes):
            if (event := self._wakes.pop(key, None)) is not None:
                event.set()

    async def _idle(self, peer: uuid.UUID, wait_s: float) -> None:
        """Wait until ``peer`` may have work for us, or ``wait_s``."""
        event = self._wakes.setdefault(peer, trio.Event())
        with trio.move_on_after(wait_s):
            await event.wait()

    async def fetch(self) -> Path:
        """Fetch until complete; returns the complete blob's path. Raises StoreFull."""
        try:
            return await self._fetch()
        finally:
            while self._ready:  # connections handed in and not used
                await self._ready.popitem()[1].aclose()

    async def _fetch(self) -> Path:
        partial = await trio.to_thread.run_sync(self.store.begin, self.info)
        missing = set(partial.missing())
        have = set(range(self.info.num_chunks)) - missing
        self.progress.have_chunks = len(have)
        sched: ChunkScheduler[uuid.UUID] = ChunkScheduler(
            self.info.num_chunks,
            have,
            SchedulerConfig(
                # per connection: one request on the wire, one chunk being stored
                max_in_flight=2 * self.config.connections_per_peer,
                request_timeout_s=self.config.chunk_timeout_s,
            ),
        )
        if not sched.done():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._peer_manager, sched, partial, nursery)
                await self._done.wait()
                nursery.cancel_scope.cancel()
        path = await trio.to_thread.run_sync(partial.complete)
        self.board.bump(self.info.sha256)
        return path

    async def _peer_manager(
        self, sched: ChunkScheduler[uuid.UUID], partial: Partial, nursery: trio.Nursery
    ) -> None:
        running: set[uuid.UUID] = set()
        while True:
            now = trio.current_time()
            expired = sched.expired_requests(now)
            for peer_id, index in expired:
                sched.on_timeout(peer_id, index, now)
            if expired:
                self._wake()
            peers = self._peers()
            conns = connections_per_peer(self.config, len(peers))
            for peer in peers:
                if peer.uuid not in running:
                    running.add(peer.uuid)
                    nursery.start_soon(self._peer_loop, peer, sched, partial, running, conns)
            await trio.sleep(self.config.manage_every_s)

    async def _peer_loop(
        self,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        partial: Partial,
        running: set[uuid.UUID],
        conns: int,
    ) -> None:
        """One peer: ``conns`` connections pulling chunks and keeping its bitmap fresh."""
        try:
            async with trio.open_nursery() as nursery:
                advert = _Advert()
                for _ in range(conns):
                    nursery.start_soon(self._worker, peer, sched, partial, advert)
        except* (http11.ClientError, trio.TooSlowError) as group:
            # a broken or misbehaving peer ends only its own loop (trio raises groups)
            log.debug("fetch %s from %s: %s", self.info.sha256[:12], peer.uuid, group.exceptions[0])
        finally:
            lost = sched.drop_peer(peer.uuid)
            for index in lost:
                log.debug("chunk %d from %s back to missing", index, peer.uuid)
            if lost:
                self._wake()
            running.discard(peer.uuid)

    async def _worker(
        self,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        partial: Partial,
        advert: _Advert,
    ) -> None:
        """One connection: ask the peer for its next scheduled chunk, repeat; when there
        is none, long-poll its bitmap on the same connection.

        Every chunk answer carries the peer's bitmap when it changed (``_heard``), so a
        busy connection needs no bitmap requests of its own. A received chunk is
        verified and written in a thread while the connection already carries the next
        request (one chunk being stored per connection: the scheduler's per-peer limit
        counts it as still in flight until it verified).
        """
        cfg, storing = self.config, trio.Semaphore(1)
        # two chunk buffers: one being received, one being stored (the semaphore makes
        # sure a buffer's store finished before it is received into again)
        size = min(self.info.chunk_bytes, self.info.size_bytes)
        buffers: list[memoryview] = []  # page-aligned: the store can write them direct
        turn = 0
        conn = self._ready.pop(peer.uuid, None) or await self.node.dial(peer)
        async with conn, trio.open_nursery() as nursery:
            await self._ask_have(conn, peer, sched, advert, wait_s=0)
            while not sched.done():
                now = trio.current_time()
                if now - advert.heard_at >= cfg.have_stale_s:
                    await self._ask_have(conn, peer, sched, advert, wait_s=0)
                picks = sched.next_requests(peer.uuid, now, most=1)
                if not picks:
                    poll_at = advert.polled_at + (
                        cfg.have_min_interval_s if advert.version else cfg.refresh_have_s
                    )
                    if sched.has_room(peer.uuid) and now >= poll_at:
                        await self._ask_have(conn, peer, sched, advert, wait_s=cfg.have_wait_s)
                    else:  # a chunk being stored makes room; or it is too soon to ask
                        wait_s = poll_at - now if now < poll_at else cfg.idle_wait_s
                        await self._idle(peer.uuid, wait_s)
                    continue
                index = picks[0]
                if len(buffers) <= turn:
                    buffers.append(aligned_buffer(size))
                body = await self._get_chunk(conn, peer, sched, index, buffers[turn], advert)
                if body is None:
                    continue
                turn ^= 1
                await storing.acquire()
                nursery.start_soon(self._store_chunk, peer, sched, partial, index, body, storing)

    async def _ask_have(
        self,
        conn: http11.HTTPSConnection,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        advert: _Advert,
        *,
        wait_s: float,
    ) -> None:
        """Ask the peer for its bitmap; with ``wait_s``, a long-poll answered when it
        changed from the version we last saw (a peer without versions is polled)."""
        path = f"/swarm/v1/blobs/{self.info.sha256}/have"
        if advert.version:
            path += f"?after={advert.version}&wait={wait_s:g}"
        if wait_s:
            advert.polled_at = trio.current_time()
        resp = await conn.request("GET", path, timeout_s=wait_s + 10)
        if resp.status not in (200, 404):  # 404: it holds none of the blob yet
            raise http11.ClientError(f"have answered {resp.status}")
        bitmap = resp.body if resp.status == 200 else None
        self._heard(peer, sched, advert, resp.headers.get(HAVE_VERSION, ""), bitmap)

    def _heard(
        self,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        advert: _Advert,
        version: str,
        bitmap: bytes | None,
    ) -> None:
        """The peer told us its bitmap (or only that it is still at ``version``)."""
        if bitmap is not None:
            try:
                chunks = decode_bitmap(bitmap, self.info.num_chunks)
            except BlobError as exc:
                raise http11.ClientError(f"bad bitmap: {exc}") from exc
            sched.set_peer_chunks(peer.uuid, chunks)
            self._wake(peer.uuid)
        advert.version = version[:64]
        advert.heard_at = trio.current_time()

    async def _get_chunk(
        self,
        conn: http11.HTTPSConnection,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        index: int,
        buffer: memoryview,
        advert: _Advert,
    ) -> bytes | memoryview | None:
        """Chunk ``index``'s bytes as the peer sent them (unverified; in ``buffer``),
        or None if it did not send it (the scheduler was told why)."""
        path = f"/swarm/v1/blobs/{self.info.sha256}/chunks/{index}"
        await self.config.fetch_limit.take(self.info.chunk_size(index))
        try:
            resp = await conn.request(
                "GET",
                path,
                headers={HAVE_AFTER: advert.version} if advert.version else None,
                max_body=self.info.chunk_bytes,
                timeout_s=self.config.chunk_timeout_s,
                into=buffer,
            )
        except http11.ClientError:
            sched.on_timeout(peer.uuid, index, trio.current_time())
            raise
        if (version := resp.headers.get(HAVE_VERSION)) is not None:
            bitmap = None
            if (encoded := resp.headers.get(HAVE_BITMAP)) is not None:
                try:
                    bitmap = base64.b64decode(encoded, validate=True)
                except binascii.Error as exc:
                    raise http11.ClientError(f"bad {HAVE_BITMAP} header: {exc}") from exc
            self._heard(peer, sched, advert, version, bitmap)
        if resp.status == 409 and resp.error_code == "not_offered":
            sched.peer_lacks(peer.uuid, index)  # super-seeding: someone else has it
            self._wake()
            return None
        if resp.status != 200:
            sched.on_timeout(peer.uuid, index, trio.current_time())
            self._wake()
            return None
        return resp.view if resp.view is not None else resp.body

    async def _store_chunk(
        self,
        peer: PeerView,
        sched: ChunkScheduler[uuid.UUID],
        partial: Partial,
        index: int,
        body: bytes | memoryview,
        storing: trio.Semaphore,
    ) -> None:
        """Verify and write one received chunk, then tell the scheduler."""
        try:
            fresh = await trio.to_thread.run_sync(partial.write_chunk, index, body)
        except ChunkMismatch as exc:
            self.progress.bad_chunks += 1
            log.warning(
                "peer %s served a corrupt chunk %d of %s: %s",
                peer.uuid,
                index,
                self.info.sha256[:12],
                exc,
            )
            sched.on_chunk_bad(peer.uuid, index, trio.current_time())
            self._wake()
            return
        except StoreFull as exc:
            self.progress.error = str(exc)
            raise
        finally:
            storing.release()
        sched.on_chunk_ok(peer.uuid, index, trio.current_time())
        self._wake(peer.uuid)  # room for one more request to this peer
        if fresh:
            self.board.bump(self.info.sha256)
            self.progress.have_chunks += 1
            self.progress.bytes_in += len(body)
            key = str(peer.uuid)
            self.progress.sources[key] = self.progress.sources.get(key, 0) + 1
        if sched.done():
            self._done.set()
