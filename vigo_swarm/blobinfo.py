"""Ask peers for a blob's chunk list (``GET /swarm/v1/blobs/<sha256>/info``).

A content subsystem knows a blob by a record it trusts (filecast: a record the operator
signed; lockbox: a record from a puddle member) and needs the BlobInfo to fetch it.
Any peer's answer is checked against that record by the caller's ``problem`` before it
is used; a peer that offers a different chunk list is skipped and reported.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import trio

from . import http11
from .blobstore import BlobError, BlobInfo
from .node import SwarmNode
from .peers import PeerView

BLOBS = "/swarm/v1/blobs/"
KEEP_GRACE_S = 0.02  # once a chunk list is found, how long the other answers may take


async def info_from_peers(
    node: SwarmNode,
    peers: Iterable[PeerView],
    sha256: str,
    problem: Callable[[BlobInfo], str | None],
    on_mismatch: Callable[[PeerView, str], None],
    *,
    wait_s: float = 0.0,
    base: str = BLOBS,
    keep: dict[uuid.UUID, http11.HTTPSConnection] | None = None,
) -> BlobInfo | None:
    """Ask every peer at once; the first BlobInfo for ``sha256`` that ``problem`` finds
    nothing wrong with wins (the other questions are cancelled), else None.

    With ``wait_s`` a peer that lacks the blob holds the question until it has it (a
    long-poll, ``?wait=``), so a fetch starts as soon as any peer can serve. ``base``
    is the subsystem's blob route prefix. ``on_mismatch(peer, problem)`` hears of each
    chunk list refused.

    ``keep``: the connections whose answer came whole are left open in it, one per peer,
    for the fetch that follows (it then dials none of those peers again); the caller
    closes what it does not use (when no chunk list is found, ``keep`` is left empty).
    The peers are then first all asked without waiting, so that every connection ends at
    an answer (the ones still unanswered ``KEEP_GRACE_S`` after a chunk list was found
    are cancelled and closed: a busy peer does not hold up the fetch), and only if none
    holds the blob yet again with ``wait_s`` (those long-polls, cancelled once one
    answers, are closed).
    """
    found: list[BlobInfo] = []
    peers = list(peers)

    async def ask(peer: PeerView, wait: float, scope: trio.CancelScope, grace: float) -> None:
        path = f"{base}{sha256}/info" + (f"?wait={wait:g}" if wait > 0 else "")
        conn = keep.pop(peer.uuid, None) if keep is not None else None
        try:
            conn = conn or await node.dial(peer)
            try:
                resp = await conn.request("GET", path, timeout_s=wait + 15)
            finally:
                if keep is not None and conn.reusable:
                    keep[peer.uuid] = conn
                else:
                    await conn.aclose()
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
        scope.deadline = min(scope.deadline, trio.current_time() + grace)  # the rest: soon

    async def everyone(wait: float, grace: float) -> None:
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer, wait, nursery.cancel_scope, grace)

    if keep is not None and wait_s > 0:
        await everyone(0.0, KEEP_GRACE_S)
        if found:
            return found[0]
    await everyone(wait_s, 0.0)
    if found:
        return found[0]
    while keep:  # nothing to fetch: nobody will use them
        await keep.popitem()[1].aclose()
    return None
