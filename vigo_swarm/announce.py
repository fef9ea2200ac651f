"""The multicast announcement: what an envoy shouts on UDP 224.0.0.42:1531.

An announcement is a *hint*. Anyone on the LAN can send one, so nothing in it is
believed until an mTLS handshake with the sender shows a certificate naming the same
UUID. The codec is strict and bounded: a packet that is oversized, truncated, not
JSON, or has a field of the wrong type or range is refused with ``AnnounceError``.

Wire format (UTF-8 JSON object, at most ``MAX_PACKET_BYTES``)::

    {"vigo": "swarm/1", "uuid": "<uuid>", "addrs": ["10.0.0.5", …],
     "port": 1531, "mv": <manifest version, int ≥ 0>}
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass
from typing import Any

MAGIC = "swarm/1"
MAX_PACKET_BYTES = 1200
MAX_ADDRESSES = 16
MAX_MANIFEST_VERSION = (1 << 63) - 1


class AnnounceError(ValueError):
    """A datagram is not a valid announcement; the reason says which rule it broke."""


@dataclass(frozen=True, slots=True)
class Announcement:
    uuid: uuid.UUID
    addresses: tuple[str, ...]
    port: int
    manifest_version: int

    def encode(self) -> bytes:
        data = json.dumps(
            {
                "vigo": MAGIC,
                "uuid": str(self.uuid),
                "addrs": list(self.addresses),
                "port": self.port,
                "mv": self.manifest_version,
            },
            separators=(",", ":"),
        ).encode()
        if len(data) > MAX_PACKET_BYTES:
            raise AnnounceError(f"announcement would be {len(data)} bytes")
        return data


def _valid_unicast(addr: object) -> str:
    if not isinstance(addr, str) or len(addr) > 45:
        raise AnnounceError("an address is not a string")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise AnnounceError(f"bad address {addr!r}") from exc
    if ip.is_multicast or ip.is_unspecified:
        raise AnnounceError(f"address {addr} is not a unicast address")
    return str(ip)


def json_datagram(datagram: bytes, magic: str, fields: set[str]) -> dict[str, Any]:
    """The JSON object of a datagram whose ``vigo`` field is ``magic`` and whose fields
    are all among ``fields``, with a valid ``uuid`` and ``port`` (shared with
    longdrawer's group); else AnnounceError."""
    if len(datagram) > MAX_PACKET_BYTES:
        raise AnnounceError(f"oversized datagram ({len(datagram)} bytes)")
    try:
        obj = json.loads(datagram.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AnnounceError("not a JSON announcement") from exc
    if not isinstance(obj, dict) or obj.get("vigo") != magic:
        raise AnnounceError(f"not a Vigo {magic.partition('/')[0]} announcement")
    unknown = set(obj) - fields
    if unknown:
        raise AnnounceError(f"unknown fields {sorted(unknown)}")
    raw_uuid = obj.get("uuid")
    if not isinstance(raw_uuid, str) or len(raw_uuid) != 36:
        raise AnnounceError("uuid missing or malformed")
    try:
        obj["uuid"] = uuid.UUID(raw_uuid)
    except ValueError as exc:
        raise AnnounceError("uuid malformed") from exc
    port = obj.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise AnnounceError("port out of range")
    return obj


def decode(datagram: bytes) -> Announcement:
    obj = json_datagram(datagram, MAGIC, {"vigo", "uuid", "addrs", "port", "mv"})
    addrs = obj.get("addrs")
    if not isinstance(addrs, list) or not 1 <= len(addrs) <= MAX_ADDRESSES:
        raise AnnounceError(f"addrs must be a list of 1..{MAX_ADDRESSES} addresses")
    mv = obj.get("mv")
    if not isinstance(mv, int) or isinstance(mv, bool) or not 0 <= mv <= MAX_MANIFEST_VERSION:
        raise AnnounceError("manifest version out of range")
    return Announcement(obj["uuid"], tuple(_valid_unicast(a) for a in addrs), obj["port"], mv)
