"""The chunk scheduler: which chunks of one blob to ask which peer for, and when.

Pure: no IO, no trio; ``now`` (monotonic seconds) is passed in and randomness comes
from an injected ``random.Random``. The driver owns the sockets, the blob store and
any bandwidth limit: it announces what peers hold, asks ``next_requests`` whenever a
peer has room, reports each answer, cancels what it is told to cancel, and calls
``on_timeout`` for each of ``expired_requests(now)``.

Policy (BitTorrent's lessons, see ANCHORS.md):

- *Pipelining*: up to ``limit`` requests in flight per peer; ``limit`` starts at
  ``max_in_flight``, halves on a timeout, drops to ``min_in_flight`` on a bad chunk,
  and grows by one per good chunk (AIMD).
- *Random first*: while fewer than ``random_first_chunks`` chunks are held, a pick is
  uniformly random among what the peer has, so we soon have something to share.
- *Rarest first*: otherwise the peer is asked for the chunks the fewest unbanned peers
  advertise; ties are broken at random, except with a single source (one peer
  advertises anything): then in index order, since there is no rarity to spread and
  chunks that arrive in order let the whole-blob hash run during the transfer.
- *Endgame*: once every missing chunk has a request in flight, a peer may be asked for
  one already in flight elsewhere that is *late* — asked ``endgame_late_factor`` times
  the typical chunk's time ago or more (an average of the good chunks' request-to-verified
  times), and at least ``endgame_min_wait_s`` ago — at most ``endgame_max_requests``
  at once, fewest requests first; the first good copy cancels the rest (``on_chunk_ok``
  returns them). A copy asked of a healthy peer would only arrive second: HTTP/1.1
  cannot cancel a request on the wire, so it would take the receiver's link from the
  chunks still missing (bench/filecast.py: a third of a receiver's last 25 chunks were
  such copies).
- *Penalties*: a bad chunk (hash mismatch) is never asked of that peer again, and after
  ``ban_after_bad`` bad chunks the peer is banned for this blob. A timeout is a smaller
  penalty: the peer's limit halves, and the chunk may be asked of it again.

Invariants (everything that changes the schedule lives in this file):

1. ``have`` only grows, and only through ``on_chunk_ok``; a chunk held is never in
   flight (its outstanding requests are returned for cancelling).
2. A peer is asked only for a chunk it advertised, that we miss, that it has not served
   bad, and that it does not already have in flight.
3. New requests go to a peer only while its in-flight count is below its ``limit``;
   ``min_in_flight <= limit <= max_in_flight``.
4. A request for a chunk already in flight elsewhere is made only in the endgame, and
   never brings that chunk past ``endgame_max_requests`` requests at once.
5. A banned peer has nothing in flight, is asked for nothing, counts toward no chunk's
   availability, and stays banned. Penalties outlive ``drop_peer``: reconnecting or
   re-announcing resets nothing.
6. ``availability[i]`` is the number of unbanned peers advertising chunk ``i``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

PeerId = TypeVar("PeerId", bound=Hashable)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_in_flight: int = 8
    min_in_flight: int = 1
    request_timeout_s: float = 30.0
    ban_after_bad: int = 3
    endgame_max_requests: int = 3
    endgame_late_factor: float = 2.0
    endgame_min_wait_s: float = 0.2
    random_first_chunks: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_in_flight <= self.max_in_flight:
            raise ValueError("need 1 <= min_in_flight <= max_in_flight")
        if self.request_timeout_s <= 0 or self.ban_after_bad < 1:
            raise ValueError("request_timeout_s must be > 0 and ban_after_bad >= 1")
        if self.endgame_max_requests < 1 or self.random_first_chunks < 0:
            raise ValueError("endgame_max_requests must be >= 1, random_first_chunks >= 0")
        if self.endgame_late_factor < 0 or self.endgame_min_wait_s < 0:
            raise ValueError("endgame_late_factor and endgame_min_wait_s must be >= 0")


@dataclass(frozen=True, slots=True)
class PeerStats(Generic[PeerId]):
    peer: PeerId
    chunks: int
    in_flight: int
    limit: int
    ok: int
    bad: int
    timeouts: int
    banned: bool


@dataclass(frozen=True, slots=True)
class SchedulerStats(Generic[PeerId]):
    num_chunks: int
    have: int
    in_flight: int
    endgame: bool
    peers: tuple[PeerStats[PeerId], ...]


@dataclass(slots=True)
class _Peer:
    limit: int
    chunks: set[int] = field(default_factory=set)
    in_flight: dict[int, float] = field(default_factory=dict)  # index -> deadline
    refused: set[int] = field(default_factory=set)  # chunks it served bad
    ok: int = 0
    bad: int = 0
    timeouts: int = 0
    banned: bool = False


class ChunkScheduler(Generic[PeerId]):
    def __init__(
        self,
        num_chunks: int,
        have: Iterable[int] = (),
        config: SchedulerConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if num_chunks < 0:
            raise ValueError(f"num_chunks must be >= 0, got {num_chunks}")
        self.num_chunks = num_chunks
        self.config = config or SchedulerConfig()
        self._rng = rng or random.Random()
        self._have = self._checked(have)
        self._missing = set(range(num_chunks)) - self._have
        self._availability = [0] * num_chunks
        self._requests: dict[int, set[PeerId]] = {}  # chunk -> peers asked; never empty
        self._peers: dict[PeerId, _Peer] = {}
        self._typical_s: float | None = None  # average request-to-verified time, good chunks

    # ------------------------------------------------------------ what peers hold

    def set_peer_chunks(self, peer: PeerId, chunks: Iterable[int]) -> None:
        """A peer's full advert (replaces what it advertised before)."""
        new, state = self._checked(chunks), self._peer(peer)
        if state.banned:
            return
        for i in state.chunks - new:
            self._availability[i] -= 1
        for i in new - state.chunks:
            self._availability[i] += 1
        state.chunks = new

    def peer_gained(self, peer: PeerId, index: int) -> None:
        self._checked([index])
        state = self._peer(peer)
        if not state.banned and index not in state.chunks:
            state.chunks.add(index)
            self._availability[index] += 1

    def peer_lacks(self, peer: PeerId, index: int) -> None:
        """``peer`` declined chunk ``index`` (it no longer offers it): not a penalty, the
        chunk just leaves its advert (and its in-flight set) until its next advert."""
        self._checked([index])
        state = self._peers.get(peer)
        if state is None:
            return
        self._unrequest(peer, state, index)
        if index in state.chunks:
            state.chunks.discard(index)
            self._availability[index] -= 1

    def drop_peer(self, peer: PeerId) -> list[int]:
        """A peer is gone; returns the chunks it had in flight, now free again.

        Its penalties (bad chunks, ban, limit) are kept: reconnecting does not reset them.
        """
        state = self._peers.get(peer)
        if state is None:
            return []
        lost = sorted(state.in_flight)
        for i in lost:
            self._unrequest(peer, state, i)
        for i in state.chunks:
            self._availability[i] -= 1
        state.chunks = set()
        return lost

    # ------------------------------------------------------------ requests

    def next_requests(self, peer: PeerId, now: float, most: int | None = None) -> list[int]:
        """The chunks to ask ``peer`` for now (already recorded as in flight), at most
        ``most`` of them (default: as many as its in-flight limit leaves room for)."""
        state = self._peers.get(peer)
        if state is None or state.banned:
            return []
        room = state.limit - len(state.in_flight)
        if most is not None:
            room = min(room, most)
        if room <= 0 or not self._missing:
            return []
        usable = (state.chunks & self._missing) - state.refused - state.in_flight.keys()
        fresh = sorted(i for i in usable if i not in self._requests)
        if len(self._have) < self.config.random_first_chunks:
            picks = self._rng.sample(fresh, min(room, len(fresh)))
        elif sum(1 for p in self._peers.values() if p.chunks) == 1:
            picks = fresh[:room]  # a single source: in order (fresh is sorted)
        else:
            picks = self._pick(fresh, room, lambda i: (self._availability[i],))
        for i in picks:
            self._request(peer, state, i, now)
        if len(picks) < room and self.endgame():
            cap, late = self.config.endgame_max_requests, now - self._late_after_s()
            dups = sorted(
                i
                for i in usable - set(picks)
                if len(self._requests[i]) < cap and self._first_asked(i) <= late
            )
            more = self._pick(
                dups, room - len(picks), lambda i: (len(self._requests[i]), self._availability[i])
            )
            for i in more:
                self._request(peer, state, i, now)
            picks += more
        return picks

    def has_room(self, peer: PeerId) -> bool:
        """``peer`` may be asked for more once it advertises it: it is not banned and
        below its in-flight limit (a peer not heard of yet has all its room)."""
        state = self._peers.get(peer)
        return state is None or (not state.banned and len(state.in_flight) < state.limit)

    def _pick(
        self, candidates: list[int], count: int, key: Callable[[int], tuple[int, ...]]
    ) -> list[int]:
        """``count`` candidates with the smallest keys; ties in random order."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in candidates:
            groups.setdefault(key(i), []).append(i)
        picks: list[int] = []
        for k in sorted(groups):
            if len(picks) >= count:
                break
            group = groups[k]
            self._rng.shuffle(group)
            picks += group[: count - len(picks)]
        return picks

    def _late_after_s(self) -> float:
        """How long a chunk is in flight before the endgame may ask another peer for it."""
        typical = self._typical_s or 0.0
        return max(self.config.endgame_min_wait_s, self.config.endgame_late_factor * typical)

    def _first_asked(self, index: int) -> float:
        """When chunk ``index``, in flight, was first asked for."""
        timeout = self.config.request_timeout_s
        return min(self._peers[p].in_flight[index] for p in self._requests[index]) - timeout

    def _request(self, peer: PeerId, state: _Peer, index: int, now: float) -> None:
        state.in_flight[index] = now + self.config.request_timeout_s
        self._requests.setdefault(index, set()).add(peer)

    def _unrequest(self, peer: PeerId, state: _Peer, index: int) -> bool:
        if state.in_flight.pop(index, None) is None:
            return False
        asked = self._requests[index]
        asked.discard(peer)
        if not asked:
            del self._requests[index]
        return True

    def expired_requests(self, now: float) -> list[tuple[PeerId, int]]:
        """Requests past their deadline; the driver cancels each and calls on_timeout."""
        return [
            (peer, i)
            for peer, state in self._peers.items()
            for i, deadline in state.in_flight.items()
            if deadline <= now
        ]

    # ------------------------------------------------------------ answers

    def on_chunk_ok(self, peer: PeerId, index: int, now: float) -> set[tuple[PeerId, int]]:
        """Chunk ``index`` from ``peer`` verified and is stored; returns requests to cancel."""
        self._checked([index])
        state = self._peers.get(peer)
        if state is not None:
            deadline = state.in_flight.get(index)
            if deadline is not None:  # how long this good chunk took, into the average
                took = max(0.0, now - (deadline - self.config.request_timeout_s))
                typical = self._typical_s
                self._typical_s = took if typical is None else 0.8 * typical + 0.2 * took
            self._unrequest(peer, state, index)
        if index in self._have:
            return set()  # a late duplicate (endgame) or a repeat
        if state is not None:
            state.ok += 1
            state.limit = min(self.config.max_in_flight, state.limit + 1)
        self._have.add(index)
        self._missing.discard(index)
        cancels = {(other, index) for other in self._requests.pop(index, set())}
        for other, _ in cancels:
            del self._peers[other].in_flight[index]
        return cancels

    def on_chunk_bad(self, peer: PeerId, index: int, now: float) -> set[tuple[PeerId, int]]:
        """``peer`` sent chunk ``index`` and it failed its hash; returns requests to cancel
        (all of the peer's when this bans it)."""
        self._checked([index])
        state = self._peers.get(peer)
        if state is None or state.banned:
            return set()
        self._unrequest(peer, state, index)
        state.bad += 1
        state.refused.add(index)
        state.limit = self.config.min_in_flight
        if state.bad < self.config.ban_after_bad:
            return set()
        cancels = {(peer, i) for i in state.in_flight}
        for i in list(state.in_flight):
            self._unrequest(peer, state, i)
        for i in state.chunks:
            self._availability[i] -= 1
        state.chunks, state.banned = set(), True
        return cancels

    def on_timeout(self, peer: PeerId, index: int, now: float) -> None:
        """The request for ``index`` to ``peer`` took too long; the driver cancelled it."""
        state = self._peers.get(peer)
        if state is not None and self._unrequest(peer, state, index):
            state.timeouts += 1
            state.limit = max(self.config.min_in_flight, state.limit // 2)

    # ------------------------------------------------------------ views

    def done(self) -> bool:
        return not self._missing

    def endgame(self) -> bool:
        """Every missing chunk has a request in flight (requests only name missing chunks)."""
        return bool(self._missing) and len(self._requests) == len(self._missing)

    @property
    def have(self) -> frozenset[int]:
        return frozenset(self._have)

    @property
    def missing(self) -> frozenset[int]:
        return frozenset(self._missing)

    def in_flight(self) -> dict[int, frozenset[PeerId]]:
        return {i: frozenset(peers) for i, peers in self._requests.items()}

    def availability(self, index: int) -> int:
        return self._availability[index]

    def statistics(self) -> SchedulerStats[PeerId]:
        peers = tuple(
            PeerStats(
                peer, len(s.chunks), len(s.in_flight), s.limit, s.ok, s.bad, s.timeouts, s.banned
            )
            for peer, s in self._peers.items()
        )
        in_flight = sum(len(s) for s in self._requests.values())
        return SchedulerStats(self.num_chunks, len(self._have), in_flight, self.endgame(), peers)

    def _peer(self, peer: PeerId) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer(limit=self.config.max_in_flight)
        return state

    def _checked(self, chunks: Iterable[int]) -> set[int]:
        out = set(chunks)
        if any(not 0 <= i < self.num_chunks for i in out):
            raise ValueError(f"chunk index out of range 0..{self.num_chunks - 1}")
        return out
