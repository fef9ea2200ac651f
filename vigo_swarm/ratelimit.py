"""An optional bandwidth limit for blob transfer: one token bucket per direction.

``TokenBucket`` is pure (``now`` passed in): ``reserve(n, now)`` takes ``n`` bytes of
credit — going into debt if need be — and says how long the caller must wait before
sending or asking for them. Reserving before the bytes move (rather than after) keeps
every concurrent connection of the daemon inside one shared budget: a chunk is 1 MiB
and many are in flight, so the bucket may go up to one chunk per caller into debt, and
the rate over any longer window stays at ``rate``.

``Limiter`` is the trio side (``await limiter.take(n)``); ``Limiter(None)`` is no limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio


@dataclass(slots=True)
class TokenBucket:
    rate: float  # bytes per second
    burst: float  # bytes of credit it can save up
    _level: float = field(init=False)
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst > 0:
            raise ValueError(f"rate and burst must be > 0, got {self.rate}, {self.burst}")
        self._level = self.burst

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes``; returns the seconds to wait before using them (0 if none)."""
        if self._at is not None:
            self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        self._level -= nbytes
        return 0.0 if self._level >= 0 else -self._level / self.rate


class Limiter:
    """``await take(n)`` before moving ``n`` bytes; shared by every transfer of a daemon."""

    def __init__(self, mbit_per_s: float | None) -> None:
        self.mbit_per_s = mbit_per_s
        rate = (mbit_per_s or 0) * 1e6 / 8
        # a quarter of a second's worth, at least one 1 MiB chunk, so a chunk never waits
        # on credit it could not save up
        self._bucket = TokenBucket(rate, max(rate / 4, 1 << 20)) if mbit_per_s else None

    async def take(self, nbytes: int) -> None:
        if self._bucket is None:
            return
        delay = self._bucket.reserve(nbytes, trio.current_time())
        if delay > 0:
            await trio.sleep(delay)
