"""``.gitback.yaml``: the small file that makes ``~/gitback/<project>/`` a mirrored repo.

::

    # every key is optional; an empty file is fine
    enabled: true                   # false: keep the file, stop mirroring for now
    max_bundle_bytes: 1073741824    # a bundle over this is not published (logged)

Pure and strict (``strict_yaml``): an unknown key, a wrong type or an out-of-range value
is a ``RepoConfigError`` whose message names the key; no anchors, tags or several
documents; at most ``MAX_REPOCONFIG_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..strict_yaml import StrictYamlError, load_small_yaml

FILE_NAME = ".gitback.yaml"
MAX_REPOCONFIG_BYTES = 16 * 1024
MAX_YAML_EVENTS = 64
DEFAULT_MAX_BUNDLE_BYTES = 1 << 30
LIMIT_BUNDLE_BYTES = 1 << 40  # the swarm's largest blob


class RepoConfigError(ValueError):
    """``.gitback.yaml`` holds something we refuse; the message names it."""


@dataclass(frozen=True, slots=True)
class RepoConfig:
    enabled: bool = True
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES


KNOWN_KEYS = ("enabled", "max_bundle_bytes")


def parse_repo_config(raw: bytes) -> RepoConfig:
    try:
        data: Any = load_small_yaml(raw, FILE_NAME, MAX_REPOCONFIG_BYTES, MAX_YAML_EVENTS)
    except StrictYamlError as exc:
        raise RepoConfigError(str(exc)) from None
    if data is None:
        return RepoConfig()
    if not isinstance(data, dict):
        raise RepoConfigError(f"{FILE_NAME} must be a mapping of keys to values (or empty)")
    for key in data:
        if key not in KNOWN_KEYS:
            raise RepoConfigError(
                f"{FILE_NAME}: unknown key {str(key)[:40]!r} (known: {', '.join(KNOWN_KEYS)})"
            )
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RepoConfigError(f"{FILE_NAME}: enabled must be true or false")
    limit = data.get("max_bundle_bytes", DEFAULT_MAX_BUNDLE_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise RepoConfigError(f"{FILE_NAME}: max_bundle_bytes must be a whole number of bytes")
    if not 1 <= limit <= LIMIT_BUNDLE_BYTES:
        raise RepoConfigError(f"{FILE_NAME}: max_bundle_bytes must be 1..{LIMIT_BUNDLE_BYTES}")
    return RepoConfig(enabled, limit)
