"""The receiver's side of gitback: pull each allowed peer's own records (anti-entropy;
pushes are the fast path), and follow each (seeder, person, project) whose mirror is
behind: fetch the next bundle's blob from allowed peers, check it against its record,
and apply it to the mirror (``Mirror``, mirror.py). Both are ``Follower``'s.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from .. import http11
from ..blobinfo import info_from_peers
from ..blobroutes import PrefixedDialer
from ..blobstore import BlobError, BlobInfo
from ..peers import PeerView
from ..transfer import Fetcher
from .gitcmd import GitError
from .mirror import Mirror, mirror_path
from .records import Record, RecordRejected, next_to_apply
from .routes import BLOBS, MAX_BODY, RECORDS_PATH
from .state import GitbackState, log


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


class Follower(GitbackState):
    """Mirroring: ``pull_from`` (the service's puller), ``_follow`` (one per repo behind)."""

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
