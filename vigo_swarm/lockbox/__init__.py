"""lockbox: a person's ``~/lockbox``, age-encrypted to their puddle, on all their envoys.

Public surface (import from here). Pure parts: ``records`` (the encrypted index: a
grow-only set of records and the view every member computes from it), ``plan`` (what
to record and what to write), ``agefile`` (age v1 files with size padding). IO:
``files`` (``~/lockbox`` through directory fds), ``state`` (where records and the
person's bookkeeping live), ``service`` (the daemon side; its parts are in ``local``,
``remote``, ``blobs``, ``channel``, ``core`` and ``box``). See docs/lockbox.md.
"""

from . import agefile
from .agefile import encrypted_size, padded_size
from .errors import BadRecord, DecryptFailed, LockboxError, SourceChanged, UnsafeLockbox
from .records import BlobRef, Entry, Record, Shown, conflict_name, live_ids, merge, view
from .service import LockboxConfig, LockboxService

__all__ = [
    "BadRecord",
    "BlobRef",
    "DecryptFailed",
    "Entry",
    "LockboxConfig",
    "LockboxError",
    "LockboxService",
    "Record",
    "Shown",
    "SourceChanged",
    "UnsafeLockbox",
    "agefile",
    "conflict_name",
    "encrypted_size",
    "live_ids",
    "merge",
    "padded_size",
    "view",
]
