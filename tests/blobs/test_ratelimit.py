"""The optional bandwidth limit (pure token bucket, and the trio limiter on a mock clock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.ratelimit import Limiter, TokenBucket


def test_the_bucket_spends_its_burst_then_makes_callers_wait_for_credit() -> None:
    b = TokenBucket(rate=100.0, burst=200.0)
    assert b.reserve(150, 0.0) == 0.0  # from the saved burst
    assert b.reserve(100, 0.0) == pytest.approx(0.5)  # 50 short: 0.5 s at 100 B/s
    assert b.reserve(100, 0.5) == pytest.approx(1.0)  # still in debt
    assert b.reserve(0, 10.0) == 0.0  # refilled, but never above the burst
    assert b.reserve(200, 10.0) == 0.0 and b.reserve(1, 10.0) > 0


def test_bad_rates_are_refused() -> None:
    for rate, burst in ((0, 1), (1, 0), (-1, 5), (float("nan"), 1)):
        with pytest.raises(ValueError, match="must be > 0"):
            TokenBucket(rate, burst)


@given(st.lists(st.tuples(st.integers(0, 5000), st.floats(0, 3)), min_size=1, max_size=50))
def test_over_any_run_the_rate_holds(takes: list[tuple[int, float]]) -> None:
    """Bytes released by time t never exceed burst + rate * t (callers wait as told)."""
    b, now, released = TokenBucket(rate=1000.0, burst=500.0), 0.0, 0
    for nbytes, gap in takes:
        now += gap
        now += b.reserve(nbytes, now)  # the caller waits, then moves the bytes
        released += nbytes
        assert released <= 500.0 + 1000.0 * now + 1e-6


def test_the_limiter_paces_on_trio_time_and_none_means_no_limit() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def ten_chunks(limiter: Limiter) -> float:
        start = trio.current_time()
        for _ in range(10):
            await limiter.take(1 << 20)
        return trio.current_time() - start

    async def main() -> tuple[float, float]:
        return await ten_chunks(Limiter(8.0)), await ten_chunks(Limiter(None))

    limited, free = trio.run(main, clock=clock)
    # 10 MiB at 8 Mbit/s = 1 MB/s: about 10.5 s after a 1 MiB burst
    assert limited == pytest.approx((10 * (1 << 20) - (1 << 20)) / 1e6, rel=0.01)
    assert free == 0.0
