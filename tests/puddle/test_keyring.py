"""Unlocked keys in memory: per uid, idle timeout."""

from __future__ import annotations

from vigo_swarm.puddle import PuddleKey
from vigo_swarm.puddle.keyring import KeyRing

KEY = PuddleKey(b"\x01" * 32)


def test_idle_timeout_counts_from_the_last_use() -> None:
    ring = KeyRing()
    ring.put(1000, KEY, idle_timeout_s=60, now=0.0)
    assert ring.get(1000, now=50.0) is KEY  # a use
    assert ring.expire(100.0) == []
    assert ring.peek(1000, now=109.0) is not None  # peeking is not a use
    assert ring.expire(110.0) == [1000]
    assert ring.get(1000, now=111.0) is None


def test_keys_are_per_uid_and_forgettable() -> None:
    ring = KeyRing()
    ring.put(1000, KEY, idle_timeout_s=0, now=0.0)
    assert ring.get(1001, now=1.0) is None
    assert ring.expire(1e9) == []  # no idle timeout
    assert ring.forget(1000) and not ring.forget(1000)
    assert len(ring) == 0
