"""The longdrawer's peer-channel routes, served to a person's partners only.

Routes (JSON bodies; see docs/longdrawer.md):

    POST /longdrawer/v1/hello            {"people": [id…]} → {"people": {id: seq}}
                                         (answered by partners.py)
    POST /longdrawer/v1/{id}/index       {"epoch", "since", "limit"} →
                                         {"epoch", "seq", "entries": […], "more"}
    POST /longdrawer/v1/{id}/notify      {"seq"} → {"ok": true}  (pull soon)
    POST /longdrawer/v1/{id}/small       {"sha256": […]} → many small blobs (batch.py)
    GET  /longdrawer/v1/{id}/blobs/{sha}/info|have|chunks/{i}
                                         the swarm transfer's blob routes, per person

Every request about a person is answered only to that person's partners (403
``not_partner`` otherwise), and only blobs the person's live index references are
served. The paths, limits and answer decoding the pulling side shares live here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import trio

from .. import http11
from ..blobroutes import private_blob_router
from ..blobstore import BlobError, BlobStore, is_sha256
from .announce import PERSON_ID
from .batch import MAX_SMALL_ANSWER_BYTES, MAX_SMALL_COUNT, SMALL_BLOB_BYTES, encode_small
from .index import to_wire
from .state import PersonSync
from .store import IndexStore

PREFIX = "/longdrawer/v1"
HELLO_PATH = PREFIX + "/hello"
MAX_INDEX_LIMIT = 2000
REQUEST_TIMEOUT_S = 30.0


def decode_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise http11.ClientError(f"{what}: not JSON") from exc


class PeerRoutes:
    """The per-person routes (index, notify, small, blobs) over ``people``, the
    service's live map of person id → ``PersonSync``."""

    def __init__(
        self, people: Mapping[str, PersonSync], index: IndexStore, store: BlobStore
    ) -> None:
        self.people = people
        self.index = index
        self.store = store
        self.bad_requests = 0
        self._blob_router = private_blob_router(store)

    def add_to(self, r: http11.Router) -> None:
        r.add("POST", PREFIX + "/{pid}/index", self.serve_index, max_body=4096)
        r.add("POST", PREFIX + "/{pid}/notify", self.notify, max_body=4096)
        r.add("POST", PREFIX + "/{pid}/small", self.serve_small, max_body=128 << 10)
        for tail in ("info", "have", "chunks/{index}"):
            r.add("GET", PREFIX + "/{pid}/blobs/{sha}/" + tail, self.serve_blob, max_body=0)

    def _partner_person(self, request: http11.Request) -> PersonSync:
        pid = request.params.get("pid", "")
        if not PERSON_ID.fullmatch(pid):
            self.bad_requests += 1
            raise http11.HTTPError(400, "bad_person", "not a person id")
        ps = self.people.get(pid)
        if ps is None:
            raise http11.HTTPError(404, "no_folder", "no such person's folder here")
        peer = request.peer
        if peer is None or peer.uuid is None or peer.uuid not in ps.partners:
            raise http11.HTTPError(403, "not_partner", "you are not a partner for this folder")
        return ps

    async def serve_index(self, request: http11.Request) -> http11.Response:
        ps = self._partner_person(request)
        body = request.json()
        if not isinstance(body, dict):
            raise http11.HTTPError(400, "bad_request", "body must be an object")
        since, limit, epoch = body.get("since"), body.get("limit"), body.get("epoch")
        if (
            not isinstance(since, int)
            or isinstance(since, bool)
            or since < 0
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_INDEX_LIMIT
            or not isinstance(epoch, str)
            or len(epoch) > 64
        ):
            raise http11.HTTPError(400, "bad_request", "since, limit or epoch out of range")
        pid = ps.person.pid
        ours, _ = await trio.to_thread.run_sync(self.index.state, pid)
        start = since if epoch == ours else 0
        entries, seq = await trio.to_thread.run_sync(self.index.since, pid, start, limit)
        return http11.json_response(
            {
                "epoch": ours,
                "seq": seq,
                "entries": [to_wire(e) for e in entries],
                "more": len(entries) == limit,
            }
        )

    async def notify(self, request: http11.Request) -> http11.Response:
        ps = self._partner_person(request)
        body = request.json()
        seq = body.get("seq") if isinstance(body, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise http11.HTTPError(400, "bad_request", "seq must be an integer >= 0")
        assert request.peer is not None and request.peer.uuid is not None
        partner = ps.partners[request.peer.uuid]
        partner.announced_seq, partner.dirty = max(partner.announced_seq, seq), True
        ps.wake.set()
        return http11.json_response({"ok": True})

    async def serve_blob(self, request: http11.Request) -> http11.Response:
        ps = self._partner_person(request)
        sha = request.params.get("sha", "")
        if sha not in ps.blobs:
            raise http11.HTTPError(404, "no_blob", "this folder holds no such file version")
        rest = request.path.split("/blobs/", 1)[1]
        handler, params, _ = self._blob_router.route("GET", "/swarm/v1/blobs/" + rest)
        return await handler(dataclasses.replace(request, params=params))

    async def serve_small(self, request: http11.Request) -> http11.Response:
        """Many small blobs of the person's live index in one answer (batch.py)."""
        ps = self._partner_person(request)
        body = request.json()
        shas = body.get("sha256") if isinstance(body, dict) else None
        if (
            not isinstance(shas, list)
            or len(shas) > MAX_SMALL_COUNT
            or not all(is_sha256(sha) for sha in shas)
        ):
            raise http11.HTTPError(
                400, "bad_request", f"sha256 must be a list of at most {MAX_SMALL_COUNT} hashes"
            )
        live = ps.blobs

        def read() -> bytes:
            records, total = [], 0
            files: dict[str, tuple[str, int]] | None = None  # hash -> (path, size)
            for sha in dict.fromkeys(s for s in shas if s in live):
                data: bytes | None = None
                info = self.store.info(sha)
                if info is None:  # a small file of ours: indexed, never copied (folder.py)
                    if files is None:
                        files = self.index.live_files(ps.person.pid)
                    path, size = files.get(sha, ("", SMALL_BLOB_BYTES + 1))
                    if size > SMALL_BLOB_BYTES:
                        continue
                    if total + size > MAX_SMALL_ANSWER_BYTES:
                        break
                    data = ps.folder.read_indexed(path, sha, size)  # None if it changed
                elif info.num_chunks == 1 and info.size_bytes <= SMALL_BLOB_BYTES:
                    if total + info.size_bytes > MAX_SMALL_ANSWER_BYTES:
                        break
                    with contextlib.suppress(BlobError):
                        data = self.store.read_chunk(sha, 0)  # re-verified against its hash
                if data is not None:
                    records.append((sha, data))
                    total += len(data)
            return encode_small(records)

        data = await trio.to_thread.run_sync(read)
        return http11.Response(body=data, content_type="application/octet-stream")
