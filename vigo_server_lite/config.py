"""Server lite configuration: typed, frozen, strict.

Sources, strongest first: command-line flags, ``server.yaml`` (default
``<data-dir>/server.yaml``), built-in defaults. ``server.yaml`` knows these keys::

    listen: "0.0.0.0:8443"        # HOST:PORT ([v6]:PORT for IPv6)
    advertise: [vigo.example.net] # names/addresses envoys dial; they go on the TLS cert
    checkin_interval_s: 30        # told to envoys at enrollment and at every check-in
    filecast_max_upload_bytes: 268435456  # largest filecast upload (held in memory)
    swarm:
      gitback:
        enabled: ["-web*", "dev*"]  # hostname patterns; first match wins, "-" denies;
                                    # no match (and no list) = denied (docs/gitback.md)

An unknown key is refused with a message naming the key and the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DEFAULT_DATA_DIR = Path("/srv/vigo")
DEFAULT_LISTEN = "0.0.0.0:8443"
DEFAULT_CHECKIN_INTERVAL_S = 30
MAX_CHECKIN_INTERVAL_S = 86400
DEFAULT_FILECAST_MAX_UPLOAD_BYTES = 256 << 20
MAX_FILECAST_UPLOAD_BYTES = 1 << 40  # the manifest's largest blob
YAML_KEYS = frozenset(
    {"listen", "advertise", "checkin_interval_s", "filecast_max_upload_bytes", "swarm"}
)


def default_data_dir() -> Path:
    return Path(os.environ.get("VIGO_SERVER_DATA", str(DEFAULT_DATA_DIR)))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    listen_host: str = "0.0.0.0"  # noqa: S104 -- a server is meant to be reached
    listen_port: int = 8443
    advertise: tuple[str, ...] = ()
    checkin_interval_s: int = DEFAULT_CHECKIN_INTERVAL_S
    ready_file: Path | None = None
    filecast_max_upload_bytes: int = DEFAULT_FILECAST_MAX_UPLOAD_BYTES
    gitback_enabled: tuple[str, ...] = ()  # swarm.gitback.enabled: hostname patterns


def parse_listen(value: str, origin: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 picks a free port (tests)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"{origin}: listen must be HOST:PORT, not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{origin}: listen port {port} is out of range")
    return host, port


def load_yaml(path: Path) -> dict[str, Any]:
    """Read server.yaml strictly. A missing file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for key in data:
        if key not in YAML_KEYS:
            known = ", ".join(sorted(YAML_KEYS))
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
    out: dict[str, Any] = {}
    if "listen" in data:
        if not isinstance(data["listen"], str):
            raise ConfigError(f"{path}: 'listen' must be a string HOST:PORT")
        out["listen"] = data["listen"]
    if "advertise" in data:
        adv = data["advertise"]
        if isinstance(adv, str):
            adv = [adv]
        if not isinstance(adv, list) or not all(isinstance(a, str) and a for a in adv):
            raise ConfigError(f"{path}: 'advertise' must be a list of names or addresses")
        out["advertise"] = adv
    for key in ("checkin_interval_s", "filecast_max_upload_bytes"):
        if key in data:
            out[key] = data[key]
    if "swarm" in data:
        out["gitback_enabled"] = gitback_patterns(data["swarm"], str(path))
    return out


def gitback_patterns(swarm: object, origin: str) -> tuple[str, ...]:
    """``swarm: {gitback: {enabled: [patterns]}}``, strictly (unknown keys refused)."""
    from vigo_swarm.gitback.policy import PolicyError, check_patterns

    if not isinstance(swarm, dict) or set(swarm) - {"gitback"}:
        raise ConfigError(f"{origin}: 'swarm' must be a mapping with only the key 'gitback'")
    gitback = swarm.get("gitback") or {}
    if not isinstance(gitback, dict) or set(gitback) - {"enabled"}:
        raise ConfigError(
            f"{origin}: 'swarm.gitback' must be a mapping with only the key 'enabled'"
        )
    try:
        return check_patterns(gitback.get("enabled") or [])
    except PolicyError as exc:
        raise ConfigError(f"{origin}: swarm.gitback.enabled: {exc}") from None


def check_interval(value: object, origin: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{origin}: checkin_interval_s must be an integer number of seconds")
    if not 1 <= value <= MAX_CHECKIN_INTERVAL_S:
        raise ConfigError(f"{origin}: checkin_interval_s must be 1..{MAX_CHECKIN_INTERVAL_S}")
    return value


def check_upload_bytes(value: object, origin: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{origin}: filecast_max_upload_bytes must be an integer (bytes)")
    if not 1 <= value <= MAX_FILECAST_UPLOAD_BYTES:
        raise ConfigError(
            f"{origin}: filecast_max_upload_bytes must be 1..{MAX_FILECAST_UPLOAD_BYTES}"
        )
    return value


def build_config(
    *,
    data_dir: Path | None = None,
    config_file: Path | None = None,
    listen: str | None = None,
    advertise: list[str] | None = None,
    checkin_interval_s: int | None = None,
    ready_file: Path | None = None,
    filecast_max_upload_bytes: int | None = None,
) -> ServerConfig:
    """Merge flags (the keyword arguments, ``None`` = not given) over server.yaml."""
    data = data_dir or default_data_dir()
    yaml_path = config_file or data / "server.yaml"
    if config_file is not None and not config_file.exists():
        raise ConfigError(f"{config_file}: no such config file")
    from_file = load_yaml(yaml_path)
    if listen is not None:
        host, port = parse_listen(listen, "--listen")
    else:
        host, port = parse_listen(from_file.get("listen", DEFAULT_LISTEN), str(yaml_path))
    if checkin_interval_s is not None:
        interval = check_interval(checkin_interval_s, "--checkin-interval-s")
    else:
        interval = check_interval(
            from_file.get("checkin_interval_s", DEFAULT_CHECKIN_INTERVAL_S), str(yaml_path)
        )
    if filecast_max_upload_bytes is not None:
        upload = check_upload_bytes(filecast_max_upload_bytes, "--filecast-max-upload-bytes")
    else:
        upload = check_upload_bytes(
            from_file.get("filecast_max_upload_bytes", DEFAULT_FILECAST_MAX_UPLOAD_BYTES),
            str(yaml_path),
        )
    names = advertise if advertise else from_file.get("advertise", [])
    return ServerConfig(
        data_dir=data,
        listen_host=host,
        listen_port=port,
        advertise=tuple(dict.fromkeys(names)),
        checkin_interval_s=interval,
        ready_file=ready_file,
        filecast_max_upload_bytes=upload,
        gitback_enabled=tuple(from_file.get("gitback_enabled", ())),
    )
