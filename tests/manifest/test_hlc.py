"""The hybrid logical clock (pure: the wall clock is a fake we move by hand)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.hlc import (
    HLC,
    MAX_COUNTER,
    MAX_STAMP,
    ClockSkewError,
    HLCError,
    format_stamp,
    pack,
    unpack,
    wall_ms_of,
)

T0 = 1_750_000_000_000


class FakeWall:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_pack_unpack_and_order() -> None:
    assert unpack(pack(T0, 7)) == (T0, 7)
    assert wall_ms_of(pack(T0, 7)) == T0
    assert pack(T0, MAX_COUNTER) + 1 == pack(T0 + 1, 0)  # the carry is the overflow rule
    assert pack(T0, 5) < pack(T0, 6) < pack(T0 + 1, 0)
    for bad in [(-1, 0), (1 << 48, 0), (T0, -1), (T0, 1 << 16)]:
        with pytest.raises(HLCError):
            pack(*bad)
    for stamp in [-1, MAX_STAMP + 1, True, 1.5, "1"]:
        with pytest.raises(HLCError):
            unpack(stamp)  # type: ignore[arg-type]


def test_format_for_people() -> None:
    assert format_stamp(pack(1_700_000_000_123, 4)) == "2023-11-14T22:13:20.123Z+4"
    assert format_stamp(MAX_STAMP).endswith("ms+65535")  # beyond year 9999: raw


def test_tick_follows_the_wall_clock_and_never_goes_back() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    assert clock.tick() == pack(T0, 0)
    assert clock.tick() == pack(T0, 1)
    wall.ms = T0 + 5
    assert clock.tick() == pack(T0 + 5, 0)
    wall.ms = T0 - 10_000  # NTP stepped the clock back ten seconds
    assert clock.tick() == pack(T0 + 5, 1)
    wall.ms = T0 + 6
    assert clock.tick() == pack(T0 + 6, 0)


def test_counter_overflow_advances_the_millisecond() -> None:
    clock = HLC(FakeWall())
    stamps = [clock.tick() for _ in range(MAX_COUNTER + 3)]
    assert stamps == sorted(set(stamps))
    assert unpack(stamps[MAX_COUNTER]) == (T0, MAX_COUNTER)
    assert unpack(stamps[MAX_COUNTER + 1]) == (T0 + 1, 0)
    assert unpack(stamps[-1]) == (T0 + 1, 1)


def test_observe_orders_after_the_remote_stamp() -> None:
    wall = FakeWall()
    clock = HLC(wall)
    remote = pack(T0 + 30_000, 9)  # a peer 30 s ahead: within the drift bound
    assert clock.observe(remote) == remote + 1
    assert clock.tick() == remote + 2  # our wall clock has not caught up yet
    assert clock.observe(pack(T0 - 1, 0)) == remote + 3  # an old stamp changes nothing
    wall.ms = T0 + 40_000
    assert clock.tick() == pack(T0 + 40_000, 0)  # and we follow real time again


def test_far_future_stamp_refused_exactly_past_the_bound() -> None:
    clock = HLC(FakeWall(), max_drift_ms=60_000)
    assert clock.observe(pack(T0 + 60_000, MAX_COUNTER)) == pack(T0 + 60_001, 0)
    before = clock.last
    with pytest.raises(ClockSkewError) as info:
        clock.observe(pack(T0 + 60_001, 0))
    assert info.value.ahead_ms == 60_001
    assert "60001 ms ahead" in str(info.value)
    assert clock.last == before  # a refused stamp changes nothing
    assert clock.is_too_far_ahead(pack(T0 + 60_001, 0))
    assert not clock.is_too_far_ahead(pack(T0 + 60_000, 0))


def test_bad_inputs() -> None:
    with pytest.raises(HLCError):
        HLC(FakeWall(-5)).tick()
    with pytest.raises(HLCError):
        HLC(FakeWall(), max_drift_ms=-1)
    with pytest.raises(HLCError):
        HLC(FakeWall()).observe(-1)
    with pytest.raises(HLCError, match="exhausted"):
        HLC(FakeWall(), start=MAX_STAMP).tick()


def test_restart_resumes_above_the_last_stamp() -> None:
    wall = FakeWall()
    first = HLC(wall)
    last = max(first.tick() for _ in range(3))
    wall.ms = T0 - 3_600_000  # the machine came back an hour in the past
    assert HLC(wall, start=last).tick() == last + 1


ops = st.lists(
    st.one_of(
        st.tuples(st.just("wall"), st.integers(-120_000, 120_000)),  # jumps both ways
        st.tuples(st.just("tick"), st.just(0)),
        st.tuples(st.just("observe"), st.integers(-200_000, 200_000)),  # remote offset
        st.tuples(st.just("burst"), st.integers(1, 300)),  # many stamps in one ms
    ),
    max_size=60,
)


@given(ops, st.integers(0, 2**16 - 1))
def test_hlc_never_goes_backwards(steps: list[tuple[str, int]], remote_counter: int) -> None:
    wall = FakeWall()
    clock = HLC(wall, max_drift_ms=60_000)
    last = 0
    for op, arg in steps:
        if op == "wall":
            wall.ms = max(0, wall.ms + arg)
            continue
        if op == "burst":
            for _ in range(arg):
                stamp = clock.tick()
                assert stamp > last
                last = stamp
            continue
        if op == "tick":
            stamp = clock.tick()
            assert wall_ms_of(stamp) >= wall.ms  # never behind the wall clock
        else:
            remote = pack(max(0, wall.ms + arg), remote_counter)
            if wall_ms_of(remote) - wall.ms > 60_000:
                with pytest.raises(ClockSkewError):
                    clock.observe(remote)
                assert clock.last == last
                continue
            stamp = clock.observe(remote)
            assert stamp > remote
        assert stamp > last
        assert clock.last == stamp
        last = stamp
