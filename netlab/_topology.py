"""Names and addresses of a lab: pure functions, no IO.

Everything a lab is called is derived from its short random id, so that a crashed run
can be found again by name alone (``vgl-<labid>-…``) and two labs never collide:

- host namespace ``vgl-<labid>-<host>``, bridge namespace ``vgl-<labid>-br``;
- in the host namespace the veth end is always ``eth0``; its peer in the bridge
  namespace is ``b-<host>`` and the bridge is ``br0``. Interface names live inside our
  own namespaces, so they only have to be unique per lab, and stay within Linux's
  15-character limit (IFNAMSIZ - 1);
- addresses come from one private /24 used only inside the lab (each lab has its own
  bridge, so every lab may reuse it): the server is ``.2``, envoy *k* is ``.10 + k``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.77.0.0/24"
PREFIX_LEN = 24
_NET = "10.77.0."
SERVER_OCTET = 2
ENVOY_BASE_OCTET = 10
MAX_ENVOYS = 200  # .11 … .210: well inside the /24, leaves room for later helpers

NS_PREFIX = "vgl-"
BRIDGE = "br0"
HOST_IFACE = "eth0"
IFNAME_MAX = 15
SERVER = "server"
MULTICAST_NET = "224.0.0.0/4"

LAB_ID_RE = re.compile(r"^[0-9a-f]{6}$")
_HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_NS_RE = re.compile(r"^vgl-([0-9a-f]{6})-([a-z][a-z0-9]*)$")


@dataclass(frozen=True)
class Host:
    """One lab host: a network namespace with one address on the lab bridge.

    ``state_dir`` is the host's private directory (a vigo state dir or the server's
    data dir); ``log_file`` collects stdout and stderr of everything spawned on it.
    ``bridge_port`` is the name of the veth end that sits in the bridge namespace.
    """

    name: str
    namespace: str
    address: str
    state_dir: Path
    log_file: Path
    bridge_port: str


def new_lab_id() -> str:
    """A short random lab id: 6 hex digits (16.7 M values; labs are few and short-lived)."""
    return secrets.token_hex(3)


def check_lab_id(lab_id: str) -> str:
    if not LAB_ID_RE.match(lab_id):
        raise ValueError(f"not a lab id (6 lowercase hex digits): {lab_id!r}")
    return lab_id


def check_host_name(name: str) -> str:
    """Host names are short lowercase words so that ``b-<host>`` fits in IFNAMSIZ."""
    if not _HOST_RE.match(name) or name == "br":
        raise ValueError(f"bad host name {name!r}: want [a-z][a-z0-9]*, at most 12 characters")
    return name


def namespace_name(lab_id: str, host: str) -> str:
    return f"{NS_PREFIX}{check_lab_id(lab_id)}-{check_host_name(host)}"


def bridge_namespace(lab_id: str) -> str:
    return f"{NS_PREFIX}{check_lab_id(lab_id)}-br"


def lab_namespace_prefix(lab_id: str) -> str:
    """Every namespace of a lab starts with this (host namespaces and the bridge's)."""
    return f"{NS_PREFIX}{check_lab_id(lab_id)}-"


def lab_id_of_namespace(namespace: str) -> str | None:
    """The lab id inside a namespace name we made, or None if it is not one of ours."""
    match = _NS_RE.match(namespace)
    return match.group(1) if match else None


def bridge_port(host: str) -> str:
    name = f"b-{check_host_name(host)}"
    assert len(name) <= IFNAME_MAX, name  # guaranteed by check_host_name
    return name


def envoy_name(index: int) -> str:
    """The name of envoy ``index`` (1-based): ``envoy1``, ``envoy2``, …"""
    if not 1 <= index <= MAX_ENVOYS:
        raise ValueError(f"envoy index {index} outside 1..{MAX_ENVOYS}")
    return f"envoy{index}"


def server_address() -> str:
    return f"{_NET}{SERVER_OCTET}"


def envoy_address(index: int) -> str:
    envoy_name(index)  # range check
    return f"{_NET}{ENVOY_BASE_OCTET + index}"


def host_names(envoys: int, *, with_server: bool) -> list[str]:
    if not 0 <= envoys <= MAX_ENVOYS:
        raise ValueError(f"envoys must be within 0..{MAX_ENVOYS}, got {envoys}")
    names = [SERVER] if with_server else []
    names.extend(envoy_name(i) for i in range(1, envoys + 1))
    if not names:
        raise ValueError("a lab needs at least one host")
    return names


def plan_hosts(lab_id: str, envoys: int, *, with_server: bool, root_dir: Path) -> tuple[Host, ...]:
    """The hosts of a lab, in creation order (server first)."""
    hosts = []
    for name in host_names(envoys, with_server=with_server):
        address = server_address() if name == SERVER else envoy_address(int(name[5:]))
        hosts.append(
            Host(
                name=name,
                namespace=namespace_name(lab_id, name),
                address=address,
                state_dir=root_dir / name,
                log_file=root_dir / "logs" / f"{name}.log",
                bridge_port=bridge_port(name),
            )
        )
    return tuple(hosts)


def default_root_dir(lab_id: str) -> Path:
    """Short on purpose: unix socket paths under a state dir must stay below 108 bytes."""
    return Path("/tmp") / f"vgl-{check_lab_id(lab_id)}"
