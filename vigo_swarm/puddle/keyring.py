"""Unlocked puddle keys held in the daemon's memory, one per person. Pure: time is an
argument; the service drives ``expire`` from a timer.

Invariants: a key is held only for the uid that unlocked it (the caller of ``put`` is
responsible for having checked that uid owns the puddle); ``get`` is a use and resets
the idle timer; ``peek`` is not; a key idle for ``idle_timeout_s`` (0 = never) is
forgotten at the next ``expire``. Python cannot wipe memory reliably: forgetting drops
the only reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from .keys import PuddleKey


@dataclass(slots=True)
class Held:
    key: PuddleKey
    idle_timeout_s: float  # 0 = no idle timeout
    unlocked_at: float
    last_used: float

    def expires_at(self) -> float | None:
        return self.last_used + self.idle_timeout_s if self.idle_timeout_s > 0 else None


class KeyRing:
    def __init__(self) -> None:
        self._held: dict[int, Held] = {}

    def put(self, uid: int, key: PuddleKey, idle_timeout_s: float, now: float) -> None:
        if idle_timeout_s < 0:
            raise ValueError("idle timeout must be 0 (none) or positive")
        self._held[uid] = Held(key, idle_timeout_s, now, now)

    def get(self, uid: int, now: float) -> PuddleKey | None:
        """The key, counting this as a use (resets the idle timer)."""
        held = self.peek(uid, now)
        if held is None:
            return None
        held.last_used = now
        return held.key

    def peek(self, uid: int, now: float) -> Held | None:
        held = self._held.get(uid)
        if held is None:
            return None
        deadline = held.expires_at()
        if deadline is not None and now >= deadline:
            del self._held[uid]
            return None
        return held

    def forget(self, uid: int) -> bool:
        return self._held.pop(uid, None) is not None

    def expire(self, now: float) -> list[int]:
        """Forget every idle key; the uids forgotten."""
        gone = [
            uid for uid, h in self._held.items() if (d := h.expires_at()) is not None and now >= d
        ]
        for uid in gone:
            del self._held[uid]
        return gone

    def next_deadline(self) -> float | None:
        deadlines = [d for h in self._held.values() if (d := h.expires_at()) is not None]
        return min(deadlines) if deadlines else None

    def __len__(self) -> int:
        return len(self._held)
