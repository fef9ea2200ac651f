"""The daemon's configuration: ``<state>/agent.yaml``, typed and strict.

Every key is optional; an unknown key, a wrong type or an out-of-range value is a
``ConfigError`` that names the key and the file. Units are in the names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """agent.yaml is unreadable or holds a key or value we refuse."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    listen_address: str = ""  # peer channel bind address; "" = all
    port: int = 1531
    advertise_addresses: tuple[str, ...] = ()
    multicast_enabled: bool = True
    multicast_group: str = "224.0.0.42"
    multicast_port: int = 1531
    multicast_interface: str = ""
    announce_interval_s: float = 5.0
    server_hints_enabled: bool = True
    checkin_interval_s: float = 0.0  # 0 = what the server says at enrollment/check-in
    checkin_backoff_max_s: float = 300.0
    peer_expire_s: float = 0.0  # 0 = derived from the announce and check-in intervals
    peer_confirm_ttl_s: float = 60.0
    control_socket: str = ""  # "" = <state>/control.sock
    seed_dirs: tuple[str, ...] = ()  # a seeder: blobs named by sha256, NAME + NAME.swarm pairs
    seed_rescan_s: float = 60.0  # sidecars: a full look besides watching for changes
    seed_settle_s: float = 2.0  # sidecars: how long a pair must be still before it is sent
    gitback_scan_s: float = 2.0  # gitback: how often people's repos' refs are looked at
    gitback_pull_s: float = 10.0  # gitback: how often allowed peers' records are pulled
    home_root: str = ""  # "" = people's homes from passwd; else <home_root>/<login name>
    fetch_limit_mbit: float = 0.0  # blob chunks this envoy downloads, all peers together; 0 = none
    serve_limit_mbit: float = 0.0  # blob chunks this envoy uploads to peers; 0 = none
    longdrawer_enabled: bool = False  # sync people's ~/longdrawer/ (docs/longdrawer.md)
    longdrawer_multicast_group: str = "224.0.0.43"
    longdrawer_multicast_port: int = 1532
    longdrawer_rescan_interval_s: float = 60.0
    lockbox_rescan_s: float = 30.0  # full rescan of each ~/lockbox (watchfiles wakes sooner)
    lockbox_sync_interval_s: float = 15.0  # record-set exchange with each member envoy
    log_level: str = "info"


_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "multicast_port": (1, 65535),
    "announce_interval_s": (0.2, 3600),
    "checkin_interval_s": (0, 86400),
    "checkin_backoff_max_s": (1, 86400),
    "peer_expire_s": (0, 86400),
    "peer_confirm_ttl_s": (1, 86400),
    "seed_rescan_s": (1, 86400),
    "seed_settle_s": (0, 3600),
    "gitback_scan_s": (0.1, 3600),
    "gitback_pull_s": (0.5, 3600),
    "fetch_limit_mbit": (0, 100_000),
    "serve_limit_mbit": (0, 100_000),
    "longdrawer_multicast_port": (1, 65535),
    "longdrawer_rescan_interval_s": (1, 86400),
    "lockbox_rescan_s": (0.5, 86400),
    "lockbox_sync_interval_s": (0.5, 86400),
}
_LEVELS = {"debug", "info", "warning", "error"}
_ADDRESS_LISTS = {"advertise_addresses"}


def _check_ip(key: str, value: str, *, multicast: bool = False) -> None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not an IP address") from exc
    if multicast and not ip.is_multicast:
        raise ConfigError(f"{key}: {value} is not a multicast group")


def parse_config(data: Any, source: str = "agent.yaml") -> AgentConfig:
    """Validate a parsed YAML document (pure; ``source`` names the file in errors)."""
    if data is None:
        return AgentConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys to values")
    known = {f.name: f for f in fields(AgentConfig)}
    defaults = AgentConfig()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be true or false")
        elif isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{source}: {key} must be a number")
            low, high = _RANGES[key]
            if not low <= value <= high:
                raise ConfigError(f"{source}: {key}={value} is outside {low:g}..{high:g}")
            value = type(default)(value)
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: {key} must be a list of strings")
            for item in value:
                if key in _ADDRESS_LISTS:
                    _check_ip(f"{source}: {key}", item)
                elif not item.startswith("/") or "\0" in item:
                    raise ConfigError(f"{source}: {key}: {item!r} is not an absolute path")
            value = tuple(value)
        elif not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string")
        values[key] = value
    cfg = AgentConfig(**values)
    if cfg.listen_address:
        _check_ip(f"{source}: listen_address", cfg.listen_address)
    if cfg.multicast_interface:
        _check_ip(f"{source}: multicast_interface", cfg.multicast_interface)
    _check_ip(f"{source}: multicast_group", cfg.multicast_group, multicast=True)
    if cfg.home_root and (not cfg.home_root.startswith("/") or "\0" in cfg.home_root):
        raise ConfigError(f"{source}: home_root: {cfg.home_root!r} is not an absolute path")
    group = cfg.longdrawer_multicast_group
    _check_ip(f"{source}: longdrawer_multicast_group", group, multicast=True)
    if cfg.log_level not in _LEVELS:
        raise ConfigError(f"{source}: log_level must be one of {', '.join(sorted(_LEVELS))}")
    return cfg


def load_config(path: Path) -> AgentConfig:
    """agent.yaml if it exists, else the defaults."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return AgentConfig()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(text) > 1 << 20:
        raise ConfigError(f"{path}: over 1 MiB; refusing to parse")
    import yaml  # lazy: only when there is a file (idle memory)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(data, str(path))
