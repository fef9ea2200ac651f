"""Longdrawer's multicast announcement on UDP 224.0.0.43:1532, and person ids.

An envoy announces which local people hold a ``~/longdrawer/`` and each one's index
sequence number, so that peers on the segment know whom to sync with and when::

    {"vigo": "longdrawer/1", "uuid": "<envoy uuid>", "port": 1531,
     "people": {"<person id>": <seq>, …}}

A person id is ``HMAC-SHA256(key, login name)`` cut to 16 bytes (32 hex digits), where
``key = SHA-256("vigo longdrawer person id v1" ‖ fleet CA certificate DER)``. User
names never go on the wire in clear; every fleet member (which holds the CA
certificate) computes the same id for "bob", so bob's envoys find each other. A LAN
observer without the CA certificate sees stable pseudonyms: it can tell that the same
person's folder is on several envoys, how many people per envoy, and when their folders
change (the seq moves), but not who they are — unless it can guess names *and* holds
the CA certificate.

Like the swarm's, an announcement is a hint: it only makes us ask the sender, over
mTLS on the peer channel, which people it holds. The codec is strict and bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass

from .. import announce as swarm_announce

MAGIC = "longdrawer/1"
MAX_PACKET_BYTES = swarm_announce.MAX_PACKET_BYTES
MAX_PEOPLE = 16  # per datagram; more people go out in several datagrams
MAX_SEQ = (1 << 63) - 1
PERSON_ID = re.compile(r"[0-9a-f]{32}")
_KEY_LABEL = b"vigo longdrawer person id v1"


# One error for both groups: the multicast driver counts and drops either the same way.
AnnounceError = swarm_announce.AnnounceError


def person_key(ca_der: bytes) -> bytes:
    return hashlib.sha256(_KEY_LABEL + ca_der).digest()


def person_id(key: bytes, login: str) -> str:
    return hmac.new(key, login.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Announcement:
    uuid: uuid.UUID
    port: int
    people: tuple[tuple[str, int], ...]  # (person id, seq)

    def encode(self) -> bytes:
        data = json.dumps(
            {
                "vigo": MAGIC,
                "uuid": str(self.uuid),
                "port": self.port,
                "people": dict(self.people),
            },
            separators=(",", ":"),
        ).encode()
        if len(data) > MAX_PACKET_BYTES or len(self.people) > MAX_PEOPLE:
            raise AnnounceError(f"announcement would be {len(data)} bytes")
        return data


def split(envoy: uuid.UUID, port: int, people: dict[str, int]) -> list[Announcement]:
    """Our people in datagrams of at most MAX_PEOPLE (at least one, maybe empty)."""
    items = sorted(people.items())
    chunks = [items[i : i + MAX_PEOPLE] for i in range(0, len(items), MAX_PEOPLE)] or [[]]
    return [Announcement(envoy, port, tuple(c)) for c in chunks]


def decode(datagram: bytes) -> Announcement:
    obj = swarm_announce.json_datagram(datagram, MAGIC, {"vigo", "uuid", "port", "people"})
    people = obj.get("people")
    if not isinstance(people, dict) or len(people) > MAX_PEOPLE:
        raise AnnounceError(f"people must be an object of at most {MAX_PEOPLE} entries")
    pairs = []
    for pid, seq in people.items():
        if not PERSON_ID.fullmatch(pid):
            raise AnnounceError("a person id is not 32 lowercase hex digits")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise AnnounceError("a sequence number is out of range")
        pairs.append((pid, seq))
    return Announcement(obj["uuid"], obj["port"], tuple(sorted(pairs)))
