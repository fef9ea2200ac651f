"""The chunk scheduler (pure): pipelining, rarest first, endgame, penalties.

The property test drives the scheduler the way the daemon will — ask, answer, time out,
drop peers — against a model of honest, corrupt and slow peers, checks the invariants
after every step, then drains: every chunk ends up fetched, and delivered ok once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigo_swarm.scheduler import ChunkScheduler, SchedulerConfig

TIMEOUT_S = 10.0


def make(n: int, have: set[int] | None = None, seed: int = 0, **kw: int) -> ChunkScheduler[str]:
    kw.setdefault("random_first_chunks", 0)
    config = SchedulerConfig(request_timeout_s=TIMEOUT_S, **kw)
    return ChunkScheduler(n, have or set(), config, random.Random(seed))


# ------------------------------------------------------------------ examples


def test_pipelining_honours_the_limit_and_grows_back() -> None:
    s = make(20, max_in_flight=4)
    s.set_peer_chunks("a", range(20))
    first = s.next_requests("a", 0.0)
    assert len(first) == 4 and s.next_requests("a", 0.0) == []
    s.on_timeout("a", first[0], 10.0)  # limit 4 -> 2, with 3 still in flight
    assert s.next_requests("a", 10.0) == []
    s.on_chunk_ok("a", first[1], 10.0)  # limit 3, 2 in flight
    assert len(s.next_requests("a", 10.0)) == 1
    (stats,) = s.statistics().peers
    assert (stats.limit, stats.in_flight, stats.ok, stats.timeouts) == (3, 3, 1, 1)


def test_rarest_first() -> None:
    s = make(6)
    s.set_peer_chunks("a", range(6))
    s.set_peer_chunks("b", [0, 1, 2, 3])
    s.set_peer_chunks("c", [0, 1])
    # availability: 0,1 -> 3; 2,3 -> 2; 4,5 -> 1
    assert sorted(s.next_requests("a", 0.0)[:2]) == [4, 5]
    assert sorted(make(6, seed=1, max_in_flight=2).next_requests("x", 0.0)) == []


def test_a_single_source_is_asked_in_order_and_two_are_not() -> None:
    for seed in range(5):
        s = make(40, have={0, 3}, seed=seed, max_in_flight=4)
        s.set_peer_chunks("a", range(40))
        assert s.next_requests("a", 0.0) == [1, 2, 4, 5]  # in order, around what we hold
    orders = set()
    for seed in range(5):
        s = make(40, seed=seed, max_in_flight=4)
        s.set_peer_chunks("a", range(40))
        s.set_peer_chunks("b", range(40))  # two sources: ties at random again
        orders.add(tuple(s.next_requests("a", 0.0)))
    assert len(orders) > 1 and (0, 1, 2, 3) not in orders


def test_next_requests_hands_out_at_most_what_is_asked() -> None:
    s = make(10, max_in_flight=4)
    s.set_peer_chunks("a", range(10))
    assert s.next_requests("a", 0.0, most=1) == [0]
    assert s.next_requests("a", 0.0, most=2) == [1, 2]
    assert s.next_requests("a", 0.0, most=5) == [3]  # the limit still holds


def test_random_first_pick_uses_the_injected_rng() -> None:
    picks = set()
    for seed in range(30):
        s = make(8, seed=seed, max_in_flight=1, random_first_chunks=1)
        s.set_peer_chunks("a", range(8))
        s.set_peer_chunks("b", [0])  # chunk 0 is the most common: never rarest
        (pick,) = s.next_requests("a", 0.0)
        picks.add(pick)
        again = make(8, seed=seed, max_in_flight=1, random_first_chunks=1)
        again.set_peer_chunks("a", range(8))
        again.set_peer_chunks("b", [0])
        assert again.next_requests("a", 0.0) == [pick]  # deterministic per seed
    assert 0 in picks and len(picks) > 2  # random, not rarest


def test_no_duplicates_before_endgame_then_endgame_cancels() -> None:
    s = make(4)
    for peer in "abc":
        s.set_peer_chunks(peer, range(4))
    assert sorted(s.next_requests("a", 0.0)) == [0, 1, 2, 3]
    assert s.endgame()
    assert s.next_requests("b", 0.1) == []  # not late yet (endgame_min_wait_s 0.2)
    dup_b = s.next_requests("b", 0.5)
    dup_c = s.next_requests("c", 0.5)
    assert sorted(dup_b) == sorted(dup_c) == [0, 1, 2, 3]
    assert s.next_requests("d", 0.0) == []  # unknown peer
    cancels = s.on_chunk_ok("b", 2, 1.0)
    assert cancels == {("a", 2), ("c", 2)}
    assert s.on_chunk_ok("a", 2, 1.0) == set()  # a late duplicate changes nothing
    assert 2 not in s.in_flight()
    assert s.statistics().have == 1


def test_the_endgame_copies_only_a_chunk_late_against_the_typical_chunks_time() -> None:
    """Copies cost the receiver's link (a request on the wire cannot be cancelled): the
    endgame asks another peer only for a chunk in flight for twice the typical time."""
    s = make(4, max_in_flight=1)
    for peer in "ab":
        s.set_peer_chunks(peer, range(4))
    for t in (0.0, 1.0):  # two chunks from a, one second each: typical 1 s
        (i,) = s.next_requests("a", t)
        s.on_chunk_ok("a", i, t + 1.0)
    (slow,) = s.next_requests("a", 2.0)
    (other,) = s.next_requests("b", 2.0)
    s.on_chunk_ok("b", other, 3.0)  # one second too: typical stays 1 s
    assert s.endgame() and s.next_requests("b", 3.9) == []  # in flight 1.9 s: not late
    assert s.next_requests("b", 4.1) == [slow]  # 2.1 s: late, ask b too
    assert s.on_chunk_ok("b", slow, 4.5) == {("a", slow)}


def test_endgame_duplicates_are_capped() -> None:
    s = make(1, endgame_max_requests=2)
    for peer in "abc":
        s.set_peer_chunks(peer, [0])
    assert s.next_requests("a", 0.0) == [0]
    assert s.next_requests("b", 1.0) == [0]
    assert s.next_requests("c", 1.0) == []


def test_a_bad_chunk_is_not_asked_again_and_bans_after_n() -> None:
    s = make(3, ban_after_bad=2)
    s.set_peer_chunks("evil", range(3))
    s.set_peer_chunks("good", range(3))
    asked = s.next_requests("evil", 0.0)
    assert s.on_chunk_bad("evil", asked[0], 1.0) == set()
    assert s.statistics().peers[0].limit == 1
    assert asked[0] not in s.next_requests("evil", 1.0)
    cancels = s.on_chunk_bad("evil", asked[1], 2.0)
    assert cancels == {("evil", i) for i in asked[2:]}  # banned: its requests are cancelled
    assert s.next_requests("evil", 2.0) == []
    s.set_peer_chunks("evil", range(3))  # re-announcing does not lift the ban
    assert s.next_requests("evil", 2.0) == [] and s.availability(0) == 1
    for i in s.next_requests("good", 3.0):
        s.on_chunk_ok("good", i, 3.0)
    assert s.done()


def test_timeouts_and_dropped_peers_free_their_chunks() -> None:
    s = make(2, endgame_max_requests=1)  # no duplicates: a chunk frees up only when released
    s.set_peer_chunks("a", [0, 1])
    s.set_peer_chunks("b", [0, 1])
    assert sorted(s.next_requests("a", 0.0)) == [0, 1]
    assert s.expired_requests(TIMEOUT_S - 0.1) == []
    assert sorted(s.expired_requests(TIMEOUT_S)) == [("a", 0), ("a", 1)]
    s.on_timeout("a", 0, TIMEOUT_S)
    s.on_timeout("a", 0, TIMEOUT_S)  # twice: counted once
    assert s.next_requests("b", TIMEOUT_S) == [0]
    assert s.drop_peer("a") == [1]
    assert s.availability(1) == 1
    assert s.next_requests("b", TIMEOUT_S) == [1]


def test_out_of_range_indices_are_refused() -> None:
    s = make(3)
    with pytest.raises(ValueError, match="out of range"):
        s.set_peer_chunks("a", [3])
    with pytest.raises(ValueError, match="out of range"):
        s.on_chunk_ok("a", -1, 0.0)
    with pytest.raises(ValueError):
        SchedulerConfig(min_in_flight=0)


def test_nothing_to_do_when_everything_is_held() -> None:
    s = make(3, have={0, 1, 2})
    s.set_peer_chunks("a", range(3))
    assert s.done() and s.next_requests("a", 0.0) == [] and not s.endgame()


# ------------------------------------------------------------------ the property


@dataclass
class World:
    s: ChunkScheduler[str]
    config: SchedulerConfig
    kinds: dict[str, str]  # peer -> good | bad | slow
    advertised: dict[str, set[int]]
    now: float = 0.0
    outstanding: set[tuple[str, int]] = field(default_factory=set)
    oks: dict[int, int] = field(default_factory=dict)
    served_bad: set[tuple[str, int]] = field(default_factory=set)

    def banned(self, peer: str) -> bool:
        return any(p.peer == peer and p.banned for p in self.s.statistics().peers)

    def ask(self, peer: str) -> None:
        s = self.s
        was_endgame = s.endgame()
        elsewhere = {i for (p, i) in self.outstanding if p != peer}
        mine = {i for (p, i) in self.outstanding if p == peer}
        fresh_candidates = (
            (self.advertised[peer] & s.missing)
            - {i for (p, i) in self.served_bad if p == peer}
            - mine
            - elsewhere
        )
        availability = {i: s.availability(i) for i in range(s.num_chunks)}
        limit = next(p.limit for p in s.statistics().peers if p.peer == peer)
        random_first = len(s.have) < self.config.random_first_chunks
        picks = s.next_requests(peer, self.now)
        assert len(set(picks)) == len(picks)
        assert len(mine) + len(picks) <= limit or not picks  # pipelining, within the limit
        for i in picks:
            assert i in self.advertised[peer] and i in s.missing and i not in mine
            assert (peer, i) not in self.served_bad
        assert not (self.banned(peer) and picks)
        dups = [i for i in picks if i in elsewhere]
        fresh = [i for i in picks if i not in elsewhere]
        assert picks == fresh + dups  # duplicates only after every fresh pick
        if dups:
            assert s.endgame() and not fresh_candidates - set(fresh)
        if not was_endgame and fresh and not random_first:
            # rarest first: nothing left unpicked is rarer than what was picked
            left = fresh_candidates - set(fresh)
            assert all(availability[i] >= max(availability[j] for j in fresh) for i in left), (
                fresh,
                left,
                availability,
            )
        self.outstanding |= {(peer, i) for i in picks}

    def answer(self, peer: str, index: int, slow_ok: bool) -> None:
        s, kind = self.s, self.kinds[peer]
        if kind == "slow" and not slow_ok:  # no answer: time passes, requests expire
            self.now += TIMEOUT_S
            expired = s.expired_requests(self.now)
            assert (peer, index) in expired and set(expired) <= self.outstanding
            for p, i in expired:
                self.outstanding.discard((p, i))
                s.on_timeout(p, i, self.now)
            return
        self.outstanding.discard((peer, index))
        if kind == "bad":
            self.served_bad.add((peer, index))
            cancels = s.on_chunk_bad(peer, index, self.now)
        else:
            already = index in s.have
            cancels = s.on_chunk_ok(peer, index, self.now)
            if not already:
                self.oks[index] = self.oks.get(index, 0) + 1
        assert cancels <= self.outstanding
        self.outstanding -= cancels

    def check(self) -> None:
        s = self.s
        in_flight = s.in_flight()
        assert {(p, i) for i, peers in in_flight.items() for p in peers} == self.outstanding
        assert not set(in_flight) & s.have
        for stats in s.statistics().peers:
            assert self.config.min_in_flight <= stats.limit <= self.config.max_in_flight
            assert stats.in_flight <= self.config.max_in_flight
            assert not (stats.banned and stats.in_flight)
        for i in range(s.num_chunks):
            holders = [p for p in self.advertised if i in self.advertised[p] and not self.banned(p)]
            assert s.availability(i) == len(holders)
            assert len(in_flight.get(i, ())) <= max(1, self.config.endgame_max_requests)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, random.Random]:
    n = draw(st.integers(1, 24))
    config = SchedulerConfig(
        max_in_flight=draw(st.integers(1, 6)),
        min_in_flight=1,
        request_timeout_s=TIMEOUT_S,
        ban_after_bad=draw(st.integers(1, 3)),
        endgame_max_requests=draw(st.integers(1, 3)),
        random_first_chunks=draw(st.sampled_from([0, 0, 1, 3])),
    )
    chunk_sets = st.sets(st.integers(0, n - 1))
    kinds = {"seed": "good"}
    advertised = {"seed": set(range(n))}  # one honest peer holds everything
    for k in range(draw(st.integers(0, 5))):
        kinds[f"p{k}"] = draw(st.sampled_from(["good", "bad", "slow"]))
        advertised[f"p{k}"] = draw(chunk_sets)
    have = draw(chunk_sets)
    rng = draw(st.randoms(use_true_random=False))
    s: ChunkScheduler[str] = ChunkScheduler(n, have, config, random.Random(rng.random()))
    world = World(s, config, kinds, advertised)
    for peer, chunks in advertised.items():
        s.set_peer_chunks(peer, chunks)
    return world, rng


@settings(max_examples=300)
@given(worlds())
def test_random_swarms_complete_every_chunk_once(case: tuple[World, random.Random]) -> None:
    world, rng = case
    s, peers = world.s, list(world.kinds)
    for _ in range(rng.randint(0, 120)):
        action = rng.random()
        if action < 0.45:
            world.ask(rng.choice(peers))
        elif action < 0.85 and world.outstanding:
            peer, index = rng.choice(sorted(world.outstanding))
            world.answer(peer, index, slow_ok=rng.random() < 0.5)
        elif action < 0.92:
            peer = rng.choice(peers[1:] or peers)
            if peer != "seed":
                freed = s.drop_peer(peer)
                assert {(peer, i) for i in freed} <= world.outstanding
                world.outstanding -= {(peer, i) for i in freed}
                s.set_peer_chunks(peer, world.advertised[peer])  # it comes back
        else:
            peer, index = rng.choice(peers), rng.randrange(s.num_chunks)
            s.peer_gained(peer, index)
            if not world.banned(peer):
                world.advertised[peer].add(index)
        world.check()

    for _ in range(10 * s.num_chunks + 50):  # drain: everyone asked, everything answered
        if s.done():
            break
        for peer in peers:
            world.ask(peer)
        for peer, index in sorted(world.outstanding):
            if (peer, index) in world.outstanding:
                world.answer(peer, index, slow_ok=True)
        world.check()
    assert s.done()
    initially_had = set(range(s.num_chunks)) - set(world.oks)
    assert all(count == 1 for count in world.oks.values())  # each fetched chunk once
    assert initially_had | set(world.oks) == set(range(s.num_chunks))
    assert world.outstanding == set() or all(i in s.have for _, i in world.outstanding)


@settings(max_examples=100)
@given(n=st.integers(1, 30), ban_after=st.integers(1, 4), seed=st.integers(0, 1000))
def test_a_peer_serving_only_bad_chunks_is_banned_and_others_finish(
    n: int, ban_after: int, seed: int
) -> None:
    s = make(n, seed=seed, ban_after_bad=ban_after)
    s.set_peer_chunks("evil", range(n))
    s.set_peer_chunks("honest", range(n))
    bad_served = 0
    for _ in range(4 * n + 10):
        if s.done():
            break
        cancelled: set[tuple[str, int]] = set()
        for i in s.next_requests("evil", 0.0):
            if ("evil", i) not in cancelled:  # the driver honours cancels
                bad_served += 1
                cancelled |= s.on_chunk_bad("evil", i, 0.0)
        for i in s.next_requests("honest", 0.0):
            s.on_chunk_ok("honest", i, 0.0)
    assert s.done()
    evil = next(p for p in s.statistics().peers if p.peer == "evil")
    assert bad_served <= ban_after
    assert evil.banned or evil.bad == bad_served < ban_after


def test_a_declined_chunk_leaves_the_peers_advert_without_a_penalty() -> None:
    s: ChunkScheduler[str] = ChunkScheduler(4, config=SchedulerConfig(max_in_flight=2))
    s.set_peer_chunks("seed", range(4))
    s.set_peer_chunks("other", [1])
    asked = s.next_requests("seed", 0.0)
    first = asked[0]
    s.peer_lacks("seed", first)  # 409 not_offered: someone else has it
    assert s.availability(first) == (1 if first == 1 else 0)
    assert first not in s.in_flight()
    stats = {p.peer: p for p in s.statistics().peers}
    assert stats["seed"].timeouts == 0 and stats["seed"].bad == 0
    assert stats["seed"].limit == 2  # no penalty
    assert first not in s.next_requests("seed", 0.0)
    s.set_peer_chunks("seed", range(4))  # its next advert brings it back
    assert s.availability(first) >= 1


def test_has_room_until_the_in_flight_limit_and_never_for_a_banned_peer() -> None:
    s: ChunkScheduler[str] = ChunkScheduler(
        8, config=SchedulerConfig(max_in_flight=2, ban_after_bad=1)
    )
    assert s.has_room("new")  # not heard of yet: all its room
    s.set_peer_chunks("p", range(8))
    assert s.next_requests("p", now=0, most=1) and s.has_room("p")
    s.next_requests("p", now=0)
    assert not s.has_room("p")
    s.set_peer_chunks("q", range(8))
    (index,) = s.next_requests("q", now=0, most=1)
    s.on_chunk_bad("q", index, now=1)  # banned after one bad chunk
    assert not s.has_room("q")
