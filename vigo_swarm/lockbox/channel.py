"""The lockbox peer channel: the routes served to a puddle's member envoys (record
sync and push, and lockbox blobs claimed ahead of filecast's blob routes), and the
record exchange this envoy starts with each member. Every route checks that the
caller's certificate UUID is in the puddle's signed member list, else 403
``not_member``; see ``service`` for the routes' shapes."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import trio

from .. import http11
from ..blobstore import is_sha256
from ..peers import PeerView
from ..puddle import PuddleError
from . import records
from .box import Box
from .core import LockboxCore
from .errors import BadRecord
from .records import Record

log = logging.getLogger(__name__)

SYNC_PATH = "/swarm/v1/lockbox/sync"
PUSH_PATH = "/swarm/v1/lockbox/push"
BLOB_BASE = "/swarm/v1/blobs/{sha}"
MAX_BODY = 64 << 20
MAX_RECORDS_PER_MESSAGE = 50_000


class PeerChannel(LockboxCore):
    """The routes members call, and the exchange we start with them."""

    # ------------------------------------------------------------ peer channel

    async def _is_member(self, puddle_hex: str, who: uuid.UUID) -> bool:
        box = self.boxes.get(puddle_hex)
        uid = self.puddle.index.get(puddle_hex)
        if uid is None:
            return False
        if box is not None and who in box.members:
            return True
        try:  # the list may have grown since our last pass: read it once more
            members = (await self.puddle.puddle_of(uid)).members
        except PuddleError:
            return False
        if box is not None:
            box.members = frozenset(members.members)
        return who in members

    def _claims(self, params: Mapping[str, str]) -> bool:
        return params.get("sha", "") in self._blob_owners

    async def _blob_handler(self, request: http11.Request) -> http11.Response:
        assert request.peer is not None and request.peer.uuid is not None  # admitted
        for puddle_hex in list(self._blob_owners.get(request.params["sha"], ())):
            if await self._is_member(puddle_hex, request.peer.uuid):
                handler, _params, _limit = self._blob_router.route(request.method, request.path)
                return await handler(request)
        self.stats.refusals += 1
        log.info("lockbox: refused blob request from non-member %s", request.peer.label)
        raise http11.HTTPError(403, "not_member", "not a member of the puddle that holds this")

    async def _member_box(self, request: http11.Request) -> tuple[Box, dict[str, Any]]:
        assert request.peer is not None and request.peer.uuid is not None  # admitted
        body = request.json()
        hex_ = body.get("puddle") if isinstance(body, dict) else None
        if not isinstance(hex_, str) or not await self._is_member(hex_, request.peer.uuid):
            self.stats.refusals += 1
            log.info("lockbox: refused %s from non-member %s", request.path, request.peer.label)
            raise http11.HTTPError(403, "not_member", "not a member of that puddle here")
        assert isinstance(body, dict)
        return self._box(hex_, self.puddle.index[hex_]), body

    async def _sync_handler(self, request: http11.Request) -> http11.Response:
        box, body = await self._member_box(request)
        ids = body.get("ids")
        if (
            not isinstance(ids, list)
            or len(ids) > MAX_RECORDS_PER_MESSAGE * 4
            or not all(is_sha256(i) for i in ids)
        ):
            raise http11.HTTPError(400, "bad_ids", "ids must be a list of record ids")
        theirs = set(ids)
        give = [box.records[i].to_wire() for i in sorted(set(box.records) - theirs)]
        want = sorted(theirs - set(box.records))
        return http11.json_response(
            {"records": give[:MAX_RECORDS_PER_MESSAGE], "want": want[:MAX_RECORDS_PER_MESSAGE]}
        )

    async def _push_handler(self, request: http11.Request) -> http11.Response:
        box, body = await self._member_box(request)
        accepted = await self._merge(
            box, body.get("records"), request.peer.label if request.peer else "?"
        )
        return http11.json_response({"accepted": accepted})

    async def _merge(self, box: Box, wire: Any, source: str) -> int:
        if not isinstance(wire, list) or len(wire) > MAX_RECORDS_PER_MESSAGE:
            raise http11.HTTPError(400, "bad_records", "records must be a list")
        new: list[Record] = []
        for item in wire:
            try:
                rec = records.record_from_wire(item)
            except BadRecord as exc:
                self.stats.records_refused += 1
                log.warning("lockbox: refused a record from %s: %s", source, exc)
                continue
            if rec.id not in box.records:
                new.append(rec)
        if new:
            box.records = records.merge(box.records, new)
            self.stats.records_in += len(new)
            await self._save(box)
            self.wake()
        return len(new)

    async def _sync_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                self._sync_wake = trio.Event()
                for box in list(self.boxes.values()):
                    for peer in self._member_peers(box):
                        key = (peer.uuid, box.puddle_hex)
                        if key not in self._syncing:
                            self._syncing.add(key)
                            nursery.start_soon(self._exchange, peer, box)
                with trio.move_on_after(self.config.sync_interval_s):
                    await self._sync_wake.wait()

    async def _exchange(self, peer: PeerView, box: Box) -> None:
        """Push-pull the record set with one member (1.5 round trips)."""
        self.stats.syncs += 1
        try:
            async with await self.node.dial(peer) as conn:
                body = {"puddle": box.puddle_hex, "ids": sorted(box.records)}
                resp = await conn.request(
                    "POST",
                    SYNC_PATH,
                    body=_dumps(body),
                    max_body=MAX_BODY,
                    timeout_s=self.config.request_timeout_s,
                )
                if resp.status != 200:
                    raise http11.ClientError(f"sync answered {resp.status}")
                answer = resp.json()
                if not isinstance(answer, dict) or not isinstance(answer.get("want"), list):
                    raise http11.ClientError("sync answer is not {records, want}")
                try:
                    await self._merge(box, answer.get("records"), str(peer.uuid))
                except http11.HTTPError as exc:
                    raise http11.ClientError(exc.message) from exc
                give = [
                    box.records[i].to_wire()
                    for i in answer["want"][:MAX_RECORDS_PER_MESSAGE]
                    if isinstance(i, str) and i in box.records
                ]
                if give:
                    push = {"puddle": box.puddle_hex, "records": give}
                    await conn.request(
                        "POST",
                        PUSH_PATH,
                        body=_dumps(push),
                        max_body=MAX_BODY,
                        timeout_s=self.config.request_timeout_s,
                    )
            box.last_sync_unix = time.time()
        except http11.ClientError as exc:
            self.stats.sync_failures += 1
            log.debug("lockbox sync with %s failed: %s", peer.uuid, exc)
        finally:
            self._syncing.discard((peer.uuid, box.puddle_hex))


def _dumps(obj: Any) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":")).encode()
