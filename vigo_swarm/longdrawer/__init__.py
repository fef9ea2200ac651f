"""longdrawer — a person's ``~/longdrawer/`` kept in sync across their envoys on a LAN.

Plaintext, per person, over the swarm's mTLS peer channel (TCP 1531); discovery on its
own multicast group UDP 224.0.0.43:1532; extra peers from ``cross_subnet_peers`` in
``~/.longdrawer/config.yaml``. See docs/longdrawer.md.

Modules: ``vv`` (version vectors), ``paths`` (validation, ignores, conflict names),
``index`` (entries, wire form, the conflict decision), ``batch`` (the small-files
answer) — pure; ``announce`` (multicast
codec, person ids), ``config``, ``store`` (SQLite index), ``folder`` (scan and write a
person's folder, blocking); the trio service: ``state`` (per-person and per-partner
state), ``partners`` (confirming partners), ``routes`` (the peer-channel routes),
``puller`` (pulling a partner's index, fetching blobs), ``apply`` (applying entries),
``service`` (``LongdrawerService``: lifecycle, scanning, notifying, status).

Exceptions::

    BadPath (ValueError)        a path that may not name anything in a folder
    BadEntry (ValueError)       a peer's index entry broke a rule
    AnnounceError               a datagram is not a longdrawer announcement
    BadBatch (ValueError)       a small-files answer is malformed
    PersonConfigError           ~/.longdrawer/config.yaml holds something refused
    IndexStoreError             the index database failed
    FolderError                 a path could not be scanned or written
     └── Stale                  the disk changed since it was indexed: rescan first
"""

from .announce import AnnounceError, person_id, person_key
from .batch import BadBatch
from .config import LongdrawerConfig, PersonConfig, PersonConfigError
from .folder import Folder, FolderError, Person, Stale
from .index import Action, BadEntry, Decision, Entry, Kind, decide, from_wire, to_wire
from .paths import BadPath, IgnoreRules, conflict_name, is_conflict_copy, validate_path
from .service import LongdrawerService
from .state import find_people
from .store import IndexStore, IndexStoreError
from .vv import Order, VersionVector

__all__ = [
    "Action",
    "AnnounceError",
    "BadBatch",
    "BadEntry",
    "BadPath",
    "Decision",
    "Entry",
    "Folder",
    "FolderError",
    "IgnoreRules",
    "IndexStore",
    "IndexStoreError",
    "Kind",
    "LongdrawerConfig",
    "LongdrawerService",
    "Order",
    "Person",
    "PersonConfig",
    "PersonConfigError",
    "Stale",
    "VersionVector",
    "conflict_name",
    "decide",
    "find_people",
    "from_wire",
    "is_conflict_copy",
    "person_id",
    "person_key",
    "to_wire",
    "validate_path",
]
