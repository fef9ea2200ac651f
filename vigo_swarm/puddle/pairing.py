"""peer-pair codes: issue, redeem, expire, lock out. Pure: time is an argument.

Invariants (everything that affects a pairing lives in ``PairingBook``):

- an owner (a person on this envoy) has at most one pairing; issuing again replaces it;
- a code is 8 decimal digits from ``secrets`` shown as ``NNNN-NNNN``, open for
  ``ttl_s`` (5 minutes) and redeemable once;
- a redeem compares the offered code with *every* open code by ``hmac.compare_digest``
  and never stops early, so timing says nothing about which digits were right;
- every refused redeem (wrong, malformed, expired, reused) is a failure counted against
  every open pairing; at ``max_failures`` a pairing is cancelled. With 10⁸ codes and
  5 failures an attacker's chance per pairing is at most 5 / 10⁸ = 5·10⁻⁸;
- the code never appears in a repr, an exception message or an event.
"""

from __future__ import annotations

import enum
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import PairingRefused

CODE_RE = re.compile(r"\A[0-9]{4}-[0-9]{4}\Z")
DEFAULT_TTL_S = 300.0
DEFAULT_MAX_FAILURES = 5
KEEP_CLOSED_S = 3600.0  # remember used/expired/cancelled pairings this long (for messages)


def new_code(randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    n = randbelow(10**8)
    return f"{n // 10**4:04d}-{n % 10**4:04d}"


def normalize_code(text: str) -> str:
    """What a person typed (``48210937``, ``4821 0937``, ``4821-0937``) → ``NNNN-NNNN``."""
    digits = "".join(ch for ch in text if ch not in " -")
    if len(digits) != 8 or not digits.isascii() or not digits.isdigit():
        raise ValueError("a pairing code is 8 digits, written NNNN-NNNN")
    return f"{digits[:4]}-{digits[4:]}"


class State(enum.Enum):
    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Pairing:
    owner: int
    code: str = field(repr=False)
    issued_at: float
    expires_at: float
    state: State = State.OPEN
    failures: int = 0
    closed_at: float | None = None


@dataclass(frozen=True, slots=True)
class PairingView:
    """What ``status`` may show about a pairing (never the code)."""

    state: str
    expires_in_s: float
    failures: int


class PairingBook:
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_failures: int = DEFAULT_MAX_FAILURES,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_failures = max_failures
        self._randbelow = randbelow
        self._pairings: dict[int, Pairing] = {}
        self.failures_total = 0

    def issue(self, owner: int, now: float) -> tuple[str, float]:
        """A fresh code for ``owner`` (replacing any earlier one) and its expiry time."""
        self._tick(now)
        code = new_code(self._randbelow)
        self._pairings[owner] = Pairing(owner, code, now, now + self.ttl_s)
        return code, now + self.ttl_s

    def cancel(self, owner: int, now: float) -> None:
        p = self._pairings.get(owner)
        if p is not None and p.state is State.OPEN:
            self._close(p, State.CANCELLED, now)

    def view(self, owner: int, now: float) -> PairingView | None:
        self._tick(now)
        p = self._pairings.get(owner)
        if p is None:
            return None
        remaining = max(0.0, p.expires_at - now) if p.state is State.OPEN else 0.0
        return PairingView(p.state.value, round(remaining, 1), p.failures)

    def redeem(self, offered: str, now: float) -> int:
        """The owner whose open code this is (the pairing closes), or ``PairingRefused``."""
        self._tick(now)
        well_formed = isinstance(offered, str) and CODE_RE.match(offered) is not None
        probe = offered.encode() if well_formed else b"\0" * 9
        matched: Pairing | None = None
        for p in list(self._pairings.values()):  # every one, no early exit
            if hmac.compare_digest(p.code.encode(), probe) and matched is None:
                matched = p
        if matched is not None and matched.state is State.OPEN:
            self._close(matched, State.USED, now)
            return matched.owner
        reason, message = self._refusal(well_formed, matched)
        self._fail(now)
        raise PairingRefused(reason, message)

    def _refusal(self, well_formed: bool, matched: Pairing | None) -> tuple[str, str]:
        if not well_formed:
            return "malformed", "a pairing code is 8 digits, written NNNN-NNNN"
        if matched is not None:
            messages = {
                State.USED: ("used", "this pairing code was already used"),
                State.EXPIRED: ("expired", "this pairing code has expired"),
                State.CANCELLED: ("cancelled", "this pairing was cancelled"),
            }
            return messages[matched.state]
        if not any(p.state is State.OPEN for p in self._pairings.values()):
            return "no_pairing", "no pairing is open on this envoy"
        return "wrong_code", "wrong pairing code"

    def _fail(self, now: float) -> None:
        self.failures_total += 1
        for p in self._pairings.values():
            if p.state is State.OPEN:
                p.failures += 1
                if p.failures >= self.max_failures:
                    self._close(p, State.CANCELLED, now)

    def _close(self, p: Pairing, state: State, now: float) -> None:
        p.state = state
        p.closed_at = now

    def _tick(self, now: float) -> None:
        for owner, p in list(self._pairings.items()):
            if p.state is State.OPEN and now >= p.expires_at:
                self._close(p, State.EXPIRED, now)
            if p.closed_at is not None and now - p.closed_at > KEEP_CLOSED_S:
                del self._pairings[owner]
