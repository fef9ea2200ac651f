"""lockbox's exception tree (one per package, STYLE.md)::

LockboxError                -- base; ``str()`` is a message fit for a person
├── DecryptFailed           -- a ciphertext is not for this key, altered or truncated
├── SourceChanged           -- a local file changed while it was encrypted (retried)
├── BadRecord               -- an index record is malformed, or its id or fields lie
└── UnsafeLockbox           -- ``~/lockbox`` or a path in it is a link, foreign or odd
"""

from __future__ import annotations


class LockboxError(Exception):
    """Base of every lockbox error."""


class DecryptFailed(LockboxError):
    """A ciphertext could not be decrypted: wrong key, altered, truncated, not age."""


class SourceChanged(LockboxError):
    """A local file changed size while it was being encrypted."""


class BadRecord(LockboxError):
    """An index record is malformed, or what it claims does not match what it holds."""


class UnsafeLockbox(LockboxError):
    """The lockbox directory or an entry in it is not safe to read or write."""
