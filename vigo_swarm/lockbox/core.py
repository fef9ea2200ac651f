"""``LockboxCore``: the fields every part of ``LockboxService`` shares (set in
``LockboxService.__init__``) and the small helpers more than one part calls.

The service is one object; its parts are the classes it is made of, each in its own
module: ``local`` (step 1 of a pass), ``remote`` (step 2), ``blobs`` (step 3),
``channel`` (the peer channel) and ``service`` (the pass itself, watching, status).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import trio

from .. import http11
from ..blobstore import BlobStore
from ..node import SwarmNode
from ..peers import PeerView
from ..puddle import PuddleService
from . import state
from .box import Box, LockboxConfig, LockboxStats
from .records import BlobRef


class LockboxCore:
    """What every part of the service holds and calls (see the module docstring)."""

    node: SwarmNode
    puddle: PuddleService
    root: Path  # <state>/swarm/lockbox
    config: LockboxConfig
    now_ns: Callable[[], int]
    stats: LockboxStats
    store: BlobStore
    boxes: dict[str, Box]
    _blob_owners: dict[str, set[str]]  # sha → puddles whose live records need it
    _fetches: dict[str, trio.CancelScope]
    _watched: set[int]
    _wake: trio.Event
    _sync_wake: trio.Event
    _pass_lock: trio.Lock
    _syncing: set[tuple[uuid.UUID, str]]
    _nursery: trio.Nursery | None
    _blob_router: http11.Router

    # ------------------------------------------------------------------ helpers

    def wake(self) -> None:
        self._wake.set()

    def _box(self, puddle_hex: str, uid: int) -> Box:
        box = self.boxes.get(puddle_hex)
        if box is None:
            recs = state.load_records(self._index_path(puddle_hex))
            box = self.boxes[puddle_hex] = Box(puddle_hex, uid, recs)
        box.uid = uid
        return box

    def _index_path(self, puddle_hex: str) -> Path:
        return self.root / "index" / f"{puddle_hex}.json"

    async def _save(self, box: Box) -> None:
        await trio.to_thread.run_sync(
            state.save_records, self._index_path(box.puddle_hex), dict(box.records)
        )

    def _member_peers(self, box: Box) -> list[PeerView]:
        return [p for p in self.node.peers() if p.uuid in box.members]

    def _complete(self, ref: BlobRef) -> bool:
        return self.store.blob_path(ref.sha256) is not None
