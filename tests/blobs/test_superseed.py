"""Super-seeding policy (pure): each chunk handed out once until it is revealed again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.superseed import SuperSeed


def test_a_chunk_given_to_one_peer_is_hidden_from_the_others_until_revealed() -> None:
    s = SuperSeed(num_chunks=5, reveal_after_s=4.0)
    assert s.visible("a", range(4), 0.0) == [0, 1, 2, 3]
    assert s.offer("a", 2, 0.0)
    assert s.visible("b", range(4), 1.0) == [0, 1, 3]
    assert s.visible("a", range(4), 1.0) == [0, 1, 2, 3]  # its own chunk stays visible
    assert not s.offer("b", 2, 1.0)  # declined: a has it
    assert s.offer("a", 2, 1.0)  # asking again for its own is fine
    assert s.next_reveal_s("b", 2.0) == pytest.approx(3.0)
    assert s.next_reveal_s("a", 2.0) is None
    assert s.visible("b", range(4), 5.0) == [0, 1, 2, 3]  # revealed after 4 s
    assert s.offer("b", 2, 5.0)  # handed out again: now hidden from a
    assert s.visible("a", range(4), 6.0) == [0, 1, 3]


def test_reveal_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="reveal_after_s"):
        SuperSeed(num_chunks=1, reveal_after_s=0)


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 7), st.floats(0, 0.5)), max_size=60)
)
def test_offer_agrees_with_visible_and_each_chunk_leaves_once_per_window(
    requests: list[tuple[str, int, float]],
) -> None:
    """Invariant 1, and: within one reveal window a chunk goes to one peer only, until
    every chunk has gone out (chunk 8 exists but is never asked for here)."""
    s = SuperSeed(num_chunks=9, reveal_after_s=100.0)
    now, holder = 0.0, {}
    for peer, index, step in requests:
        now += step
        shown = index in s.visible(peer, [index], now)
        assert s.offer(peer, index, now) == shown
        if shown:
            assert holder.setdefault(index, peer) == peer
    assert not s.all_given


def test_once_every_chunk_went_out_nothing_is_hidden() -> None:
    s = SuperSeed(num_chunks=3, reveal_after_s=100.0)
    assert s.offer("a", 0, 0.0) and s.offer("b", 1, 0.0)
    assert s.visible("c", range(3), 1.0) == [2]
    assert s.next_reveal_s("c", 1.0) == pytest.approx(99.0)
    assert not s.offer("c", 0, 1.0)
    assert s.offer("c", 2, 1.0)  # the last new chunk: the super-seeding phase ends
    assert s.all_given
    assert s.visible("c", range(3), 1.5) == [0, 1, 2]
    assert s.offer("c", 0, 1.5)
    assert s.next_reveal_s("c", 1.5) is None


def test_asking_for_chunks_that_do_not_exist_does_not_end_the_hiding() -> None:
    s = SuperSeed(num_chunks=2, reveal_after_s=100.0)
    assert s.offer("a", 0, 0.0)
    for index in (2, 3, -1, 10**9):
        s.offer("b", index, 0.0)
    assert not s.all_given
    assert not s.offer("b", 0, 0.5)


def test_hidden_from_lists_what_visible_leaves_out() -> None:
    s = SuperSeed(4, reveal_after_s=10)
    assert s.offer("a", 0, now=0) and s.offer("b", 1, now=1)
    assert sorted(s.hidden_from("a", now=2)) == [1]
    assert sorted(s.hidden_from("c", now=2)) == [0, 1]
    assert s.hidden_from("c", now=10.5) == [1]  # 0 is shown again after 10 s
    assert s.offer("c", 2, now=3) and s.offer("c", 3, now=3)  # every chunk went out
    assert s.hidden_from("c", now=4) == []
