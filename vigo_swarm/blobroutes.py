"""The swarm's blob routes re-rooted for a content subsystem with its own blob store.

``transfer.BlobServer`` serves ``/swarm/v1/blobs/<sha>/…`` from one store and
``Fetcher`` asks for those paths. A subsystem whose blobs must not be in filecast's
store (filecast collects every blob its manifest does not name, and serves any envoy)
keeps its own store, serves it under its own prefix with its own access checks, and
fetches through ``PrefixedDialer``:

- ``private_blob_router(store)``: the three blob endpoints on a router of their own,
  for the subsystem's handler to dispatch to after its checks;
- ``PrefixedDialer(node, prefix)``: what ``Fetcher`` needs of a node (``dial``), with
  every ``/swarm/v1/blobs/`` path rewritten to ``prefix``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from . import http11
from .blobstore import BlobStore
from .node import SwarmNode
from .peers import PeerView
from .transfer import register_blob_routes

BLOB_ROOT = "/swarm/v1/blobs/"


def private_blob_router(store: BlobStore) -> http11.Router:
    holder = SimpleNamespace(router=http11.Router())
    register_blob_routes(cast(SwarmNode, holder), store)
    router: http11.Router = holder.router
    return router


class PrefixedConnection:
    """A peer connection whose swarm blob paths go to ``prefix``."""

    def __init__(self, conn: http11.HTTPSConnection, prefix: str) -> None:
        self._conn, self._prefix = conn, prefix

    @property
    def peer(self) -> Any:
        return self._conn.peer

    async def request(self, method: str, path: str, **kw: Any) -> http11.ClientResponse:
        return await self._conn.request(method, path.replace(BLOB_ROOT, self._prefix), **kw)

    async def aclose(self) -> None:
        await self._conn.aclose()

    async def __aenter__(self) -> PrefixedConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class PrefixedDialer:
    """What ``Fetcher`` needs of a node (``dial``), re-rooted under ``prefix``."""

    def __init__(self, node: SwarmNode, prefix: str) -> None:
        self._node, self._prefix = node, prefix

    async def dial(self, peer: PeerView) -> http11.HTTPSConnection:
        conn = await self._node.dial(peer)
        return cast(http11.HTTPSConnection, PrefixedConnection(conn, self._prefix))

    def as_node(self) -> SwarmNode:
        """This dialer where ``Fetcher`` wants a node (it only calls ``dial``)."""
        return cast(SwarmNode, self)
