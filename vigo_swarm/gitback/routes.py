"""Gitback's peer-channel routes. Every caller is a verified envoy; these also require
that the caller's *certificate hostname* and our own are allowed by the host patterns:

    POST /swarm/v1/gitback/records          a seeder pushes its records
    GET  /swarm/v1/gitback/records          the records this envoy seeded
    GET  /swarm/v1/gitback/blobs/<sha>/…    info, have, chunks of a blob a held record
                                            names (the swarm's blob routes, own store)

The paths and body limit the pushing and pulling sides share live here too.
"""

from __future__ import annotations

import dataclasses

from .. import http11
from ..blobroutes import private_blob_router
from ..blobstore import is_sha256
from .records import RecordRejected
from .state import GitbackState

PREFIX = "/swarm/v1/gitback"
RECORDS_PATH = PREFIX + "/records"
BLOBS = PREFIX + "/blobs/"
MAX_BODY = 32 << 20


class PeerRoutes(GitbackState):
    """The route handlers, registered on the node's router when the state is built."""

    _blob_router: http11.Router  # the swarm's blob routes over our own store

    def _add_routes(self) -> None:
        self._blob_router = private_blob_router(self.store)
        router = self.node.router
        router.add("POST", RECORDS_PATH, self._push_handler, max_body=MAX_BODY)
        router.add("GET", RECORDS_PATH, self._records_handler, max_body=0)
        for suffix in ("/info", "/have", "/chunks/{index}"):
            router.add("GET", BLOBS + "{sha}" + suffix, self._blob_handler, max_body=0)

    def _admit(self, request: http11.Request) -> str:
        peer = request.peer
        if peer is None or peer.uuid is None:
            raise http11.HTTPError(403, "forbidden", "an envoy certificate is required")
        if not self.allowed or not self.policy.allows_host(peer.hostname):
            self.stats.refused_callers += 1
            raise http11.HTTPError(
                403, "gitback_not_allowed", "gitback is not allowed between these envoys"
            )
        return str(peer.uuid)

    async def _push_handler(self, request: http11.Request) -> http11.Response:
        caller = self._admit(request)
        obj = request.json()
        try:
            accepted, bad = self.accept(
                obj.get("records") if isinstance(obj, dict) else None,
                caller,
                request.peer.hostname if request.peer else None,
            )
        except RecordRejected as exc:
            raise http11.HTTPError(400, "bad_records", str(exc)) from exc
        return http11.json_response({"accepted": accepted, "rejected": bad})

    async def _records_handler(self, request: http11.Request) -> http11.Response:
        self._admit(request)
        return http11.json_response({"records": [r.to_wire() for r in self.own_records()]})

    async def _blob_handler(self, request: http11.Request) -> http11.Response:
        self._admit(request)
        sha = request.params.get("sha", "")
        if not is_sha256(sha) or sha not in self._referenced():
            raise http11.HTTPError(404, "no_blob", "no gitback record here names this blob")
        rest = request.path[len(BLOBS) :]
        handler, params, _ = self._blob_router.route("GET", "/swarm/v1/blobs/" + rest)
        return await handler(dataclasses.replace(request, params=params))
