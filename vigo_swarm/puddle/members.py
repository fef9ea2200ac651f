"""The puddle's member list: which envoys are in it, signed by the puddle key. Pure.

A list is ``(puddle public key, version, sorted envoy UUIDs)`` plus an Ed25519 signature
over a canonical binary encoding (no JSON ambiguity)::

    b"vigo-puddle-members/1\\n" || public key (32) || version (u64 BE)
        || count (u16 BE) || uuid bytes (16 each, ascending)

Only a holder of the unlocked key can make a list, so a fleet peer can relay lists but
never forge one. Versions order them: a higher version replaces a lower one. Two
different lists with the same version (two envoys paired someone at the same moment)
are a *conflict*: an unlocked member resolves it by signing the union at the next
version; a locked one keeps the list with the larger signature, so every envoy picks
the same one until an unlocked member repairs it.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import BadMemberList
from .keys import PUBLIC_BYTES, SIGNATURE_BYTES, PuddleKey, verify

DOMAIN = b"vigo-puddle-members/1\n"
MAX_MEMBERS = 256
WIRE_KEYS = frozenset({"puddle", "version", "members", "sig"})


def _signed_bytes(puddle: bytes, version: int, members: tuple[uuid.UUID, ...]) -> bytes:
    return (
        DOMAIN
        + puddle
        + struct.pack(">QH", version, len(members))
        + b"".join(m.bytes for m in members)
    )


@dataclass(frozen=True, slots=True)
class MemberList:
    puddle: bytes  # the puddle's Ed25519 public key
    version: int
    members: tuple[uuid.UUID, ...]  # ascending, unique
    signature: bytes

    def __contains__(self, envoy: object) -> bool:
        return envoy in self.members

    def to_wire(self) -> dict[str, Any]:
        return {
            "puddle": self.puddle.hex(),
            "version": self.version,
            "members": [str(m) for m in self.members],
            "sig": self.signature.hex(),
        }


def sign_members(key: PuddleKey, version: int, members: Iterable[uuid.UUID]) -> MemberList:
    ordered = tuple(sorted(set(members)))
    if not ordered or len(ordered) > MAX_MEMBERS:
        raise ValueError(f"a member list holds 1..{MAX_MEMBERS} envoys")
    if not 1 <= version < 1 << 63:
        raise ValueError("member list version must be positive")
    sig = key.sign(_signed_bytes(key.public, version, ordered))
    return MemberList(key.public, version, ordered, sig)


def add_member(key: PuddleKey, current: MemberList, envoy: uuid.UUID) -> MemberList:
    """The list with ``envoy`` in it (the same list if it already is)."""
    if envoy in current.members:
        return current
    return sign_members(key, current.version + 1, (*current.members, envoy))


def _hex(obj: Any, field: str, size: int) -> bytes:
    if not isinstance(obj, str) or len(obj) != 2 * size:
        raise BadMemberList(f"member list: {field} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(obj)
    except ValueError as exc:
        raise BadMemberList(f"member list: {field} is not hex") from exc


def members_from_wire(obj: Any, *, puddle: bytes | None = None) -> MemberList:
    """Strictly decode and verify a wire list; ``puddle`` pins whose list it must be."""
    if not isinstance(obj, dict) or set(obj) != WIRE_KEYS:
        raise BadMemberList(f"member list must be an object with keys {sorted(WIRE_KEYS)}")
    public = _hex(obj["puddle"], "puddle", PUBLIC_BYTES)
    if puddle is not None and public != puddle:
        raise BadMemberList("member list belongs to another puddle")
    version = obj["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 1 << 63:
        raise BadMemberList("member list: version must be a positive integer")
    raw = obj["members"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_MEMBERS:
        raise BadMemberList(f"member list: members must be a list of 1..{MAX_MEMBERS} UUIDs")
    members = []
    for item in raw:
        try:
            parsed = uuid.UUID(item) if isinstance(item, str) else None
        except ValueError:
            parsed = None
        if parsed is None or str(parsed) != item:
            raise BadMemberList(f"member list: {item!r} is not a canonical UUID")
        members.append(parsed)
    ordered = tuple(members)
    if list(ordered) != sorted(set(ordered)):
        raise BadMemberList("member list: members must be unique and in ascending order")
    sig = _hex(obj["sig"], "sig", SIGNATURE_BYTES)
    if not verify(public, _signed_bytes(public, version, ordered), sig):
        raise BadMemberList("member list signature check failed")
    return MemberList(public, version, ordered, sig)


class Merge(enum.Enum):
    KEEP = "keep"  # ours is newer or the same
    TAKE = "take"  # theirs is newer
    CONFLICT = "conflict"  # same version, different members


def compare(ours: MemberList, theirs: MemberList) -> Merge:
    """Pure merge decision for two lists of the same puddle."""
    if theirs.version > ours.version:
        return Merge.TAKE
    if theirs.version < ours.version or theirs.members == ours.members:
        return Merge.KEEP
    return Merge.CONFLICT


def resolve(ours: MemberList, theirs: MemberList, key: PuddleKey | None) -> MemberList:
    """The list to hold after seeing ``theirs``: with the key, a conflict becomes the
    union at the next version; without it, the larger signature wins everywhere."""
    decision = compare(ours, theirs)
    if decision is Merge.TAKE:
        return theirs
    if decision is Merge.KEEP:
        return ours
    if key is not None:
        return sign_members(key, ours.version + 1, (*ours.members, *theirs.members))
    return max(ours, theirs, key=lambda m: m.signature)
