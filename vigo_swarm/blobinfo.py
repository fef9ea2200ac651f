"""Ask peers for a blob's chunk list (``GET /swarm/v1/blobs/<sha256>/info``).

A content subsystem knows a blob by a record it trusts (filecast: a record the operator
signed; lockbox: a record from a puddle member) and needs the BlobInfo to fetch it.
Any peer's answer is checked against that record by the caller's ``problem`` before it
is used; a peer that offers a different chunk list is skipped and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio

from . import http11
from .blobstore import BlobError, BlobInfo
from .node import SwarmNode
from .peers import PeerView

BLOBS = "/swarm/v1/blobs/"


async def info_from_peers(
    node: SwarmNode,
    peers: Iterable[PeerView],
    sha256: str,
    problem: Callable[[BlobInfo], str | None],
    on_mismatch: Callable[[PeerView, str], None],
    *,
    wait_s: float = 0.0,
    base: str = BLOBS,
) -> BlobInfo | None:
    """Ask every peer at once; the first BlobInfo for ``sha256`` that ``problem`` finds
    nothing wrong with wins (the other questions are cancelled), else None.

    With ``wait_s`` a peer that lacks the blob holds the question until it has it (a
    long-poll, ``?wait=``), so a fetch starts as soon as any peer can serve. ``base``
    is the subsystem's blob route prefix. ``on_mismatch(peer, problem)`` hears of each
    chunk list refused.
    """
    found: list[BlobInfo] = []
    path = f"{base}{sha256}/info" + (f"?wait={wait_s:g}" if wait_s > 0 else "")

    async def ask(peer: PeerView, done: trio.CancelScope) -> None:
        try:
            async with await node.dial(peer) as conn:
                resp = await conn.request("GET", path, timeout_s=wait_s + 15)
        except http11.ClientError:
            return
        if resp.status != 200:
            return
        try:
            info = BlobInfo.from_json(resp.body)
        except BlobError:
            return
        why = problem(info)
        if why is not None:
            on_mismatch(peer, why)
            return
        found.append(info)
        done.cancel()

    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(ask, peer, nursery.cancel_scope)
    return found[0] if found else None
