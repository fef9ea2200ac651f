"""The per-person and per-partner state of the longdrawer service: whom we sync a
folder with (``Partner``), what was done (``PersonStats``), everything one person's
sync holds (``PersonSync``), what an announcement told us (``Heard``), and which
people have a folder here (``find_people``)."""

from __future__ import annotations

import collections
import os
import pwd
import stat
import uuid
from dataclasses import dataclass, field

import trio

from ..homes import home_of
from ..peers import PeerView
from ..transfer import Fetcher
from .announce import person_id
from .config import PersonConfig
from .folder import Folder, Person
from .paths import IgnoreRules


@dataclass(slots=True)
class Partner:
    uuid: uuid.UUID
    address: str
    port: int
    via: str  # "multicast" | "cross_subnet"
    hostname: str | None
    confirmed_at: float
    last_heard: float
    announced_seq: int = 0
    pulled_seq: int = 0
    dirty: bool = True
    last_pull: float | None = None
    last_error: str = ""

    def view(self) -> PeerView:
        return PeerView(
            self.uuid,
            self.hostname,
            True,
            self.address,
            self.port,
            (self.address,),
            (self.via,),
            None,
            self.last_error,
            None,
        )


@dataclass(slots=True)
class PersonStats:
    scans: int = 0
    local_changes: int = 0
    applied: int = 0
    conflicts: int = 0
    refused: int = 0
    bytes_fetched: int = 0
    small_requests: int = 0  # /small requests made (many small files per request)
    files_written: int = 0
    last_error: str = ""


@dataclass(slots=True)
class PersonSync:
    person: Person
    folder: Folder
    rules: IgnoreRules = field(default_factory=IgnoreRules)
    config: PersonConfig = field(default_factory=PersonConfig)
    partners: dict[uuid.UUID, Partner] = field(default_factory=dict)
    cross_addrs: set[str] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)  # live file hashes (served to partners)
    # pinned from blob collection: being fetched or applied (count of batches at it)
    fetching: collections.Counter[str] = field(default_factory=collections.Counter)
    retry_at: dict[str, tuple[int, float]] = field(default_factory=dict)  # sha → (fails, when)
    pending: dict[str, int] = field(default_factory=dict)  # path → bytes still to apply
    changing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stats: PersonStats = field(default_factory=PersonStats)
    lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)  # tell partners (coalesced)
    fetchers: set[Fetcher] = field(default_factory=set)  # in flight (live byte counts)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(frozen=True, slots=True)
class Heard:
    address: str
    port: int
    people: dict[str, int]
    at: float


def find_people(home_root: str, key: bytes) -> list[Person]:
    """People with a ``longdrawer`` folder they own: homes from passwd, or
    ``<home_root>/<login>`` when set (tests, netlab: many envoys on one machine)."""
    found: dict[int, Person] = {}
    for pw in pwd.getpwall():
        home = home_of(pw, home_root)
        try:
            st = os.lstat(home / "longdrawer")
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == pw.pw_uid and pw.pw_uid not in found:
            found[pw.pw_uid] = Person(
                pw.pw_name, pw.pw_uid, pw.pw_gid, home, person_id(key, pw.pw_name)
            )
    return list(found.values())
