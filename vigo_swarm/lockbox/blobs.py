"""Step 3 of a lockbox pass: the ciphertext blobs of live records fetched from member
envoys only, and blobs no live record needs collected."""

from __future__ import annotations

import logging

import trio

from ..blobinfo import info_from_peers
from ..blobstore import BlobError, BlobInfo
from ..peers import PeerView
from ..transfer import Fetcher
from . import records
from .box import Box
from .core import LockboxCore
from .records import BlobRef

log = logging.getLogger(__name__)


class BlobFetching(LockboxCore):
    """Step 3: fetch what live records need, collect the rest."""

    # ---------------------------------------------------- step 3: blobs

    async def _collect_and_fetch(self) -> None:
        owners: dict[str, set[str]] = {}
        refs: dict[str, tuple[Box, BlobRef]] = {}
        for box in self.boxes.values():
            for sha, ref in records.live_blobs(box.records).items():
                owners.setdefault(sha, set()).add(box.puddle_hex)
                refs[sha] = (box, ref)
        self._blob_owners = owners
        for sha, scope in list(self._fetches.items()):
            if sha not in owners:
                scope.cancel()
        assert self._nursery is not None
        for sha, (box, ref) in refs.items():
            if sha not in self._fetches and not self._complete(ref):
                scope = self._fetches[sha] = trio.CancelScope()
                self._nursery.start_soon(self._fetch, box, ref, scope)
        # inside the pass: a blob encrypted for a record not yet made is never collected
        collected = await trio.to_thread.run_sync(self.store.gc, set(owners), set(self._fetches))
        self.stats.blobs_collected += len(collected)

    async def _fetch(self, box: Box, ref: BlobRef, scope: trio.CancelScope) -> None:
        try:
            with scope:
                info = None
                while info is None:
                    info = await self._info_from_members(box, ref)
                    if info is None:
                        await trio.sleep(self.config.sync_interval_s)
                fetcher = Fetcher(
                    self.node,
                    self.store,
                    info,
                    self.config.transfer,
                    peers=lambda: self._member_peers(box),
                )
                await fetcher.fetch()
                self.stats.blobs_fetched += 1
                self.wake()
        except* BlobError as group:
            box.fail(f"a blob could not be fetched: {group.exceptions[0]}")
            log.warning("lockbox: blob %s: %s", ref.sha256[:12], group.exceptions[0])
        finally:
            self._fetches.pop(ref.sha256, None)

    async def _info_from_members(self, box: Box, ref: BlobRef) -> BlobInfo | None:
        def problem(info: BlobInfo) -> str | None:
            return None if ref.matches(info) else "is not the one the record names"

        def mismatch(peer: PeerView, why: str) -> None:
            log.warning(
                "lockbox: peer %s offered a chunk list for %s that %s",
                peer.uuid,
                ref.sha256[:12],
                why,
            )

        return await info_from_peers(
            self.node, self._member_peers(box), ref.sha256, problem, mismatch
        )
