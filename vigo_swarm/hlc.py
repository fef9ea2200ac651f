"""Hybrid logical clock: timestamps that order events like a Lamport clock and read
like wall-clock time.

A stamp is one unsigned 64-bit integer::

    stamp = wall_ms << 16 | counter        wall_ms: 48 bits (Unix ms), counter: 16 bits

so comparing two stamps as plain integers compares (wall_ms, counter)
lexicographically, and ``stamp + 1`` bumps the counter, carrying into the
millisecond when the counter is full — that carry *is* the overflow rule.

Invariants (everything that changes the clock lives in this file; it does no IO and
reads the wall clock only through the ``now_ms`` callable it was given):

1. Every stamp the clock hands out (``tick`` or ``observe``) is strictly greater than
   every stamp it handed out before, whatever the wall clock does (jumps backwards
   included): ``new = max(pack(wall, 0), last + 1)``.
2. ``observe(remote)`` returns a stamp strictly greater than ``remote`` too, so an
   event caused by a remote one is ordered after it:
   ``new = max(pack(wall, 0), max(last, remote) + 1)``.
3. A remote stamp whose wall part is more than ``max_drift_ms`` ahead of our wall
   clock is refused with ``ClockSkewError`` and changes nothing: one peer with a clock
   set to next year must not drag the whole fleet's clocks (and LWW order) with it.
   Exactly ``max_drift_ms`` ahead is accepted.
4. The clock stays close to real time: while the wall clock moves forwards, the wall
   part of a new stamp is the wall clock itself (counter 0) unless a recent local or
   observed stamp is already ahead.

Exceptions::

    HLCError (ValueError)       a malformed stamp, a wall clock out of range, an
     │                          exhausted clock
     └── ClockSkewError         a remote stamp too far in the future
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

WALL_BITS = 48
COUNTER_BITS = 16
MAX_WALL_MS = (1 << WALL_BITS) - 1
MAX_COUNTER = (1 << COUNTER_BITS) - 1
MAX_STAMP = (1 << (WALL_BITS + COUNTER_BITS)) - 1
DEFAULT_MAX_DRIFT_MS = 60_000


class HLCError(ValueError):
    """A stamp or a wall-clock reading is out of range, or the clock is exhausted."""


class ClockSkewError(HLCError):
    """A remote stamp is further ahead of our wall clock than ``max_drift_ms``."""

    def __init__(self, remote: int, wall_ms: int, max_drift_ms: int) -> None:
        self.remote = remote
        self.wall_ms = wall_ms
        self.ahead_ms = wall_ms_of(remote) - wall_ms
        self.max_drift_ms = max_drift_ms
        super().__init__(
            f"timestamp {format_stamp(remote)} is {self.ahead_ms} ms ahead of our clock "
            f"(at most {max_drift_ms} ms allowed)"
        )


def _check_int(value: object, upper: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise HLCError(f"{what} must be an integer in 0..{upper}, got {value!r}")
    return value


def check_stamp(stamp: object) -> int:
    """Return ``stamp`` if it is a well-formed 64-bit HLC stamp, else raise HLCError."""
    return _check_int(stamp, MAX_STAMP, "an HLC stamp")


def pack(wall_ms: int, counter: int) -> int:
    """Build a stamp from its wall-clock milliseconds and its counter."""
    _check_int(wall_ms, MAX_WALL_MS, "wall_ms")
    _check_int(counter, MAX_COUNTER, "counter")
    return wall_ms << COUNTER_BITS | counter


def unpack(stamp: int) -> tuple[int, int]:
    """Split a stamp into ``(wall_ms, counter)``."""
    check_stamp(stamp)
    return stamp >> COUNTER_BITS, stamp & MAX_COUNTER


def wall_ms_of(stamp: int) -> int:
    """The wall-clock part of a stamp, in Unix milliseconds."""
    return stamp >> COUNTER_BITS


def format_stamp(stamp: int) -> str:
    """A stamp for people: ``2025-01-31T12:00:00.123Z+5`` (UTC, then the counter)."""
    wall_ms, counter = stamp >> COUNTER_BITS, stamp & MAX_COUNTER
    try:
        when = dt.datetime.fromtimestamp(wall_ms // 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{wall_ms}ms+{counter}"  # beyond year 9999: no calendar for it
    return f"{when:%Y-%m-%dT%H:%M:%S}.{wall_ms % 1000:03d}Z+{counter}"


class HLC:
    """One node's hybrid logical clock (see the module docstring for its invariants).

    ``now_ms`` returns Unix time in integer milliseconds (``time.time_ns() // 1_000_000``
    in the daemon, a fake in tests). ``start`` is the last stamp this node issued
    before a restart, so a restarted signer never reuses a stamp even if its wall clock
    went backwards meanwhile.
    """

    def __init__(
        self,
        now_ms: Callable[[], int],
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        *,
        start: int = 0,
    ) -> None:
        if isinstance(max_drift_ms, bool) or not isinstance(max_drift_ms, int) or max_drift_ms < 0:
            raise HLCError(f"max_drift_ms must be a non-negative integer, got {max_drift_ms!r}")
        self._now_ms = now_ms
        self.max_drift_ms = max_drift_ms
        self._last = check_stamp(start)

    @property
    def last(self) -> int:
        """The greatest stamp handed out (or observed) so far; 0 before the first."""
        return self._last

    def _wall(self) -> int:
        return _check_int(self._now_ms(), MAX_WALL_MS, "the wall clock (ms)")

    def _advance(self, floor: int, wall_ms: int) -> int:
        new = max(wall_ms << COUNTER_BITS, floor + 1)
        if new > MAX_STAMP:
            raise HLCError("the clock is exhausted (wall part beyond 2^48 ms)")
        self._last = new
        return new

    def tick(self) -> int:
        """A stamp for a local event (e.g. signing a record): strictly increasing."""
        return self._advance(self._last, self._wall())

    def observe(self, remote: int) -> int:
        """Merge a remote stamp; returns a new stamp after both it and our last one.

        Raises ``ClockSkewError`` (and changes nothing) if ``remote`` is more than
        ``max_drift_ms`` ahead of our wall clock; ``HLCError`` if it is malformed.
        """
        check_stamp(remote)
        wall_ms = self._wall()
        if wall_ms_of(remote) - wall_ms > self.max_drift_ms:
            raise ClockSkewError(remote, wall_ms, self.max_drift_ms)
        return self._advance(max(self._last, remote), wall_ms)

    def is_too_far_ahead(self, remote: int) -> bool:
        """Whether ``observe(remote)`` would refuse ``remote`` as too far in the future."""
        return wall_ms_of(check_stamp(remote)) - self._wall() > self.max_drift_ms
