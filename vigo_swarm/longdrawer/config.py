"""A person's ``~/.longdrawer/config.yaml`` (strict) and the service's own settings.

The person's file is optional; its only key is ``cross_subnet_peers``: envoys off the
LAN segment to sync with, each an IP address or a host name, optionally ``:port``
(default 1531)::

    cross_subnet_peers:
      - 10.20.0.7
      - laptop.example.org:1531

An unknown key, a wrong type, a bad address, more than 64 peers, a file over 64 KiB or
YAML tags are refused with ``PersonConfigError`` naming the file, the rule and the
offending entry. The daemon reads the file without following symlinks and only when
the person owns it (``folder.read_person_file``), so a message never shows anyone
bytes of a file they could not read themselves; a YAML error names only the line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

MAX_CONFIG_BYTES = 64 * 1024
MAX_PEERS = 64
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


class PersonConfigError(ValueError):
    """A person's config.yaml holds something we refuse; the message says what."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    host: str
    port: int = 1531


@dataclass(frozen=True, slots=True)
class PersonConfig:
    cross_subnet_peers: tuple[PeerAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class LongdrawerConfig:
    """The daemon's settings (from agent.yaml)."""

    group: str = "224.0.0.43"
    port: int = 1532
    interface_address: str = ""
    announce_interval_s: float = 5.0
    rescan_interval_s: float = 60.0  # full rescan that catches anything the watcher missed
    people_interval_s: float = 10.0  # how often to look for new ~/longdrawer/ folders
    pull_interval_s: float = 10.0  # anti-entropy pull from every partner
    debounce_ms: int = 50
    chunk_bytes: int = 1 << 20
    home_root: str = ""  # "" = homes from passwd; else <home_root>/<login name>


def parse_peer(item: object, source: str) -> PeerAddress:
    if not isinstance(item, str) or not item or len(item) > 300:
        raise PersonConfigError(f"{source}: cross_subnet_peers entries must be host names")
    host, port = item, 1531
    if item.count(":") == 1:  # host:port (an IPv6 address has several colons)
        host, _, raw = item.partition(":")
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise PersonConfigError(f"{source}: {item!r:.80}: port must be 1..65535")
        port = int(raw)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise PersonConfigError(
                f"{source}: {item!r:.80} is neither an IP address nor a host name"
            ) from None
    return PeerAddress(host, port)


def parse_person_config(data: Any, source: str) -> PersonConfig:
    if data is None:
        return PersonConfig()
    if not isinstance(data, dict):
        raise PersonConfigError(f"{source}: top level must be a mapping")
    if unknown := set(data) - {"cross_subnet_peers"}:
        raise PersonConfigError(
            f"{source}: unknown key {sorted(map(str, unknown))[0]!r} (known: cross_subnet_peers)"
        )
    peers = data.get("cross_subnet_peers") or []
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise PersonConfigError(f"{source}: cross_subnet_peers must be a list of at most 64")
    return PersonConfig(tuple(parse_peer(p, source) for p in peers))


def load_person_config(text: bytes, source: str) -> PersonConfig:
    if len(text) > MAX_CONFIG_BYTES:
        raise PersonConfigError(f"{source}: over {MAX_CONFIG_BYTES} bytes; refusing to parse")
    import yaml  # lazy: most people have no config file

    try:
        data = yaml.safe_load(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PersonConfigError(f"{source}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PersonConfigError(f"{source}: not valid YAML{where}") from exc
    return parse_person_config(data, source)
