"""The puddle's exception tree (one per package, STYLE.md)::

PuddleError                 -- base; ``str()`` is a message fit for a person
├── CorruptIdentity         -- wrapped identity malformed, truncated, or badly signed
├── WrongPassphrase         -- well-formed identity; the passphrase does not open it
├── BadMemberList           -- member list malformed, badly signed, or for another puddle
├── PairingRefused          -- a pairing code was not accepted (``reason`` says why)
└── PuddleStateError        -- the person's ``~/.vigo-puddle/`` cannot be used
    ├── NoPuddle            -- there is none (run init or join)
    └── UnsafePuddleDir     -- wrong owner, mode, a symlink, or not a regular file
"""

from __future__ import annotations


class PuddleError(Exception):
    """Base of every puddle error."""


class CorruptIdentity(PuddleError):
    """The wrapped identity is malformed, truncated, or its signature fails."""


class WrongPassphrase(PuddleError):
    """The passphrase does not open a well-formed wrapped identity."""


class BadMemberList(PuddleError):
    """A member list is malformed, badly signed, or names another puddle."""


class PairingRefused(PuddleError):
    """A pairing code was refused; ``reason`` is one of ``REASONS`` (never the code)."""

    REASONS = ("no_pairing", "wrong_code", "expired", "used", "cancelled", "locked", "malformed")

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PuddleStateError(PuddleError):
    """The person's puddle directory cannot be read or written safely."""


class NoPuddle(PuddleStateError):
    """This person has no puddle on this envoy."""


class UnsafePuddleDir(PuddleStateError):
    """The puddle directory or a file in it has the wrong owner, mode or type."""
