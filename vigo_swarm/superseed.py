"""Super-seeding: the origin of a blob hands each chunk out once, not once per receiver.

Without it, every receiver picks chunks from the seeder at random, several pick the same
chunk before they learn that a neighbour already has it, and the seeder's uplink — the
fleet's scarcest link during a filecast — carries many copies of a file. BitTorrent's
answer (BEP 16) is to let the seeder show each downloader only pieces nobody has had
yet; the downloaders then trade those among themselves.

Here (pure: ``now`` is passed in, no IO):

- a chunk given to peer P is *hidden* from every other peer for ``reveal_after_s``:
  their view of the seeder's chunks (``visible``) leaves it out and a request for it
  is declined (``offer`` → False; the peer channel answers 409 ``not_offered``, which
  costs no bytes, and the asker drops that chunk from the seeder's advert);
- after ``reveal_after_s`` the chunk is shown again, so a receiver that died with its
  only copy, or kept it to itself, delays the others by at most that long; handing it
  out again hides it again, so each chunk leaves the seeder at most once per
  ``reveal_after_s`` while the fleet is healthy;
- once every chunk has been handed out, nothing is hidden any more: there is nothing
  new left to spread, and the seeder's uplink would sit idle while the receivers trade
  the last chunks, each held by one of them (the tail of a filecast). The seeder then
  serves like any peer; the receivers' rarest-first ask it for those last chunks.

Invariants:

1. ``offer(p, i, now)`` is True iff ``i`` is visible to ``p`` at ``now``; when True
   (and some chunk of ``0 .. num_chunks - 1`` was never given out), ``i`` is then hidden
   from everyone but ``p`` until ``now + reveal_after_s``.
2. A chunk never given out, or given to ``p`` itself, is always visible to ``p``.
3. ``next_reveal_s`` is the time until ``visible`` can next grow for that peer (None
   when nothing is hidden from it), so a long-poll knows when to answer at the latest.
4. An index outside ``0 .. num_chunks - 1`` is never recorded: asking for chunks that
   do not exist cannot end the hiding early.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class SuperSeed:
    num_chunks: int
    reveal_after_s: float = 4.0
    _given: dict[int, tuple[Hashable, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reveal_after_s <= 0:
            raise ValueError(f"reveal_after_s must be > 0, got {self.reveal_after_s}")
        if self.num_chunks < 0:
            raise ValueError(f"num_chunks must be >= 0, got {self.num_chunks}")

    @property
    def all_given(self) -> bool:
        """Every chunk went out at least once: from now on nothing is hidden."""
        return len(self._given) >= self.num_chunks

    def _hidden(self, peer: Hashable, index: int, now: float) -> bool:
        if self.all_given:
            return False
        given = self._given.get(index)
        return given is not None and given[0] != peer and now - given[1] < self.reveal_after_s

    def visible(self, peer: Hashable, chunks: Iterable[int], now: float) -> list[int]:
        """The chunks of ``chunks`` that ``peer`` may see (and ask for) now."""
        return [i for i in chunks if not self._hidden(peer, i, now)]

    def hidden_from(self, peer: Hashable, now: float) -> list[int]:
        """The chunks ``visible`` leaves out for ``peer`` now (given to others lately)."""
        return [i for i in self._given if self._hidden(peer, i, now)]

    def offer(self, peer: Hashable, index: int, now: float) -> bool:
        """``peer`` asks for chunk ``index``: True (and recorded) if it may have it."""
        if self._hidden(peer, index, now):
            return False
        if 0 <= index < self.num_chunks:
            self._given[index] = (peer, now)
        return True

    def next_reveal_s(self, peer: Hashable, now: float) -> float | None:
        if self.all_given:
            return None
        waits = [
            at + self.reveal_after_s - now
            for p, at in self._given.values()
            if p != peer and now - at < self.reveal_after_s
        ]
        return max(0.0, min(waits)) if waits else None
