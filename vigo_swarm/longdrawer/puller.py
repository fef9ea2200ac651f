"""Pulling a partner's index changes and applying them to a person's folder.

Small files (one chunk) come many per ``/small`` request on the connection the index
was pulled on; larger ones are fetched with the swarm ``Fetcher`` as-is (its requests
are re-rooted under the person's blob routes) into the longdrawer blob store; a
version whose blob is already here (a rename, a copy) moves no bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from .. import http11
from ..blobroutes import PrefixedDialer
from ..blobstore import BlobError, BlobStore, describe_bytes
from ..node import SwarmNode
from ..transfer import Fetcher, TransferConfig
from .apply import Applier
from .batch import MAX_SMALL_ANSWER_BYTES, SMALL_BLOB_BYTES, BadBatch, decode_small, plan_batches
from .index import BadEntry, Entry, Kind, from_wire
from .routes import MAX_INDEX_LIMIT, PREFIX, REQUEST_TIMEOUT_S, decode_json
from .state import Partner, PersonSync
from .store import IndexStore, IndexStoreError

log = logging.getLogger(__name__)

MAX_INDEX_BODY = 64 << 20
FETCH_CONCURRENCY = 8
OWN_COPY_BYTES = 64 << 20  # small files taken from our own copies per batch, at most
STALL_S = 30.0  # a fetch with no new chunk for this long is given up (retried later)
BAD_STALL_S = 3.0  # … this long once a partner has served a chunk that did not match
RETRY_MAX_S = 300.0  # a blob that failed is retried after 2, 4, 8 … s up to this


@dataclass(frozen=True, slots=True)
class Puller:
    """Pulls index changes from a person's partners, fetches the blobs they need and
    hands the entries to ``applier``."""

    node: SwarmNode
    index: IndexStore
    store: BlobStore
    transfer: TransferConfig
    applier: Applier

    async def pull(self, ps: PersonSync, partner: Partner) -> None:
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
        obj = decode_json(raw, "index")
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
        results += await self.applier.apply_entries(ps, ready, own)
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
                results.extend(await self.applier.apply_entries(ps, later, got))

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
                results.extend(await self.applier.apply_entries(ps, group))

            async with trio.open_nursery() as nursery:
                for group in large.values():
                    nursery.start_soon(fetch_then_apply, group)

    def _failed(self, ps: PersonSync, sha: str) -> None:
        """A blob could not be had: try it again after 2, 4, 8 … s."""
        fails = ps.retry_at.get(sha, (0, 0.0))[0] + 1
        ps.retry_at[sha] = (fails, trio.current_time() + min(RETRY_MAX_S, 2.0**fails))

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
