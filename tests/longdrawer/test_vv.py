"""Version vector algebra: the laws the sync relies on (Hypothesis)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.longdrawer import Order, VersionVector

ENVOYS = [str(uuid.UUID(int=i)) for i in range(4)]
vectors = st.dictionaries(st.sampled_from(ENVOYS), st.integers(0, 6)).map(VersionVector.of)


@given(vectors, vectors)
def test_merge_commutes(a: VersionVector, b: VersionVector) -> None:
    assert a.merge(b) == b.merge(a)


@given(vectors, vectors, vectors)
def test_merge_associates(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(vectors)
def test_merge_is_idempotent(a: VersionVector) -> None:
    assert a.merge(a) == a


@given(vectors, vectors)
def test_merge_dominates_both(a: VersionVector, b: VersionVector) -> None:
    m = a.merge(b)
    assert m.dominates(a) and m.dominates(b)


@given(vectors, st.sampled_from(ENVOYS))
def test_bump_is_strictly_after(a: VersionVector, envoy: str) -> None:
    assert a.bump(envoy).compare(a) is Order.AFTER
    assert a.compare(a.bump(envoy)) is Order.BEFORE


@given(vectors, vectors)
def test_compare_is_antisymmetric(a: VersionVector, b: VersionVector) -> None:
    flip = {
        Order.EQUAL: Order.EQUAL,
        Order.BEFORE: Order.AFTER,
        Order.AFTER: Order.BEFORE,
        Order.CONCURRENT: Order.CONCURRENT,
    }
    assert b.compare(a) is flip[a.compare(b)]


@given(vectors, st.sampled_from(ENVOYS), st.sampled_from(ENVOYS))
def test_independent_bumps_are_concurrent(a: VersionVector, x: str, y: str) -> None:
    if x != y:
        assert a.bump(x).compare(a.bump(y)) is Order.CONCURRENT


def test_zero_counters_are_absent() -> None:
    assert VersionVector.of({ENVOYS[0]: 0}) == VersionVector()
    assert VersionVector.of({ENVOYS[0]: 2}).get(ENVOYS[1]) == 0
