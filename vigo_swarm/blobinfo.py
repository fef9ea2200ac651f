"""Ask peers for a blob's chunk list (``GET /swarm/v1/blobs/<sha256>/info``).

A content subsystem knows a blob by a record it trusts (filecast: a record the operator
signed; lockbox: a record from a puddle member) and needs the BlobInfo to fetch it.
Any peer's answer is checked against that record by the caller's ``problem`` before it
is used; a peer that offers a different chunk list is skipped and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import http11
from .blobstore import BlobError, BlobInfo
from .node import SwarmNode
from .peers import PeerView


async def info_from_peers(
    node: SwarmNode,
    peers: Iterable[PeerView],
    sha256: str,
    problem: Callable[[BlobInfo], str | None],
    on_mismatch: Callable[[PeerView, str], None],
) -> BlobInfo | None:
    """The first peer's BlobInfo for ``sha256`` that ``problem`` finds nothing wrong
    with, else None. ``on_mismatch(peer, problem)`` hears of each one refused."""
    for peer in peers:
        try:
            async with await node.dial(peer) as conn:
                resp = await conn.request("GET", f"/swarm/v1/blobs/{sha256}/info")
        except http11.ClientError:
            continue
        if resp.status != 200:
            continue
        try:
            info = BlobInfo.from_json(resp.body)
        except BlobError:
            continue
        why = problem(info)
        if why is None:
            return info
        on_mismatch(peer, why)
    return None
