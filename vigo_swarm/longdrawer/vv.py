"""Version vectors: which envoy changed a file how many times (pure, no IO).

A version vector maps an envoy UUID to a counter. An envoy that changes a file bumps
its own counter past every counter it has seen for that file. Two vectors compare as

- EQUAL      — the same history;
- BEFORE     — ``a`` is an ancestor of ``b`` (``b`` saw everything ``a`` saw, and more);
- AFTER      — the reverse;
- CONCURRENT — each saw a change the other did not: a conflict to resolve.

Invariants (tested with Hypothesis): ``merge`` is commutative, associative and
idempotent; ``merge(a, b)`` is ≥ both; ``bump(a, e)`` is strictly AFTER ``a``;
``compare`` is antisymmetric. A missing key counts as 0, so ``{x: 0}`` equals ``{}``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_COUNTER = (1 << 63) - 1
MAX_ENTRIES = 1024  # one per envoy that ever edited the file


class Order(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True)
class VersionVector:
    """Immutable; ``counters`` holds (envoy, counter > 0) pairs sorted by envoy."""

    counters: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, items: Mapping[str, int] | Iterable[tuple[str, int]]) -> VersionVector:
        pairs = items.items() if isinstance(items, Mapping) else items
        found: dict[str, int] = {}
        for envoy, counter in pairs:
            if counter > 0:
                found[envoy] = max(counter, found.get(envoy, 0))
        return cls(tuple(sorted(found.items())))

    def get(self, envoy: str) -> int:
        for key, value in self.counters:
            if key == envoy:
                return value
        return 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.counters)

    def compare(self, other: VersionVector) -> Order:
        mine, theirs = self.as_dict(), other.as_dict()
        less = more = False
        for envoy in mine.keys() | theirs.keys():
            a, b = mine.get(envoy, 0), theirs.get(envoy, 0)
            less |= a < b
            more |= a > b
        if less and more:
            return Order.CONCURRENT
        if less:
            return Order.BEFORE
        return Order.AFTER if more else Order.EQUAL

    def merge(self, other: VersionVector) -> VersionVector:
        return VersionVector.of([*self.counters, *other.counters])

    def bump(self, envoy: str) -> VersionVector:
        """A new local change by ``envoy``: its counter passes every counter seen."""
        top = max((c for _, c in self.counters), default=0)
        return VersionVector.of({**self.as_dict(), envoy: top + 1})

    def dominates(self, other: VersionVector) -> bool:
        """True when ``self`` has seen everything ``other`` has (AFTER or EQUAL)."""
        return self.compare(other) in (Order.AFTER, Order.EQUAL)
