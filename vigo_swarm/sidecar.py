"""filecast sidecars: ``NAME.swarm`` beside ``NAME`` in a seeder's seed directory.

A sidecar says where the file beside it goes and how long it stays::

    target: etc/motd            # one path, or a list of paths (each its own record)
    retention: until_revoked    # optional; pinned | until_revoked | expires_at:<unix s>

Everything here is pure (no IO, ``now`` is an argument): the seeder's scanner reads
the bytes and ``lstat``s the files, then asks this module. Parsing is strict, and each
refusal is a ``SidecarError`` whose message names the problem for a person:

- the sidecar: over ``MAX_SIDECAR_BYTES``, not UTF-8, not YAML, more than one
  document, anchors/aliases (YAML bombs) or tags (``!!python/object``), too many
  YAML nodes, not a mapping, a duplicate or unknown key, no ``target``;
- ``target``: not a string or a list of strings, an empty list, more than
  ``MAX_TARGETS``, a path twice, or a path ``validate_target`` refuses (absolute,
  ``..``, NUL, empty, over 1024 bytes, …) — the manifest's own rules;
- ``retention``: not a string, or text ``parse_retention`` refuses — the rules of
  ``vigocli swarm filecast distribute --retention``;
- the file it names: missing, a symlink, not a regular file, over ``MAX_SIZE_BYTES``,
  or itself named like a sidecar.
"""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from typing import Any

from .manifest import (
    MAX_SIZE_BYTES,
    MAX_TARGETS,
    InvalidRetention,
    InvalidTarget,
    Retention,
    RetentionKind,
    parse_retention,
    retention_text,
    validate_target,
)

SUFFIX = ".swarm"
KNOWN_KEYS = ("retention", "target")
MAX_SIDECAR_BYTES = 16 * 1024
MAX_YAML_EVENTS = 4 * MAX_TARGETS + 32  # a sidecar of MAX_TARGETS targets needs ~70


class SidecarError(ValueError):
    """A sidecar, or the file it names, is refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Sidecar:
    targets: tuple[str, ...]
    retention: Retention

    @property
    def retention_text(self) -> str:
        return retention_text(self.retention)


def is_sidecar_name(name: str) -> bool:
    return name.endswith(SUFFIX)


def data_name(sidecar_name: str) -> str:
    """``motd.swarm`` → ``motd``: the file a sidecar describes (in the same directory)."""
    if not is_sidecar_name(sidecar_name):
        raise SidecarError(f"{sidecar_name!r} is not a sidecar (no {SUFFIX} suffix)")
    name = sidecar_name[: -len(SUFFIX)]
    if not name:
        raise SidecarError(f"{sidecar_name!r} names no file: use NAME{SUFFIX} beside NAME")
    if is_sidecar_name(name):
        raise SidecarError(f"{sidecar_name!r} describes {name!r}, which is itself a sidecar")
    return name


def check_data_file(name: str, st: os.stat_result | None) -> None:
    """The ``lstat`` of the file a sidecar names (None: it does not exist)."""
    if st is None:
        raise SidecarError(f"the file {name!r} this sidecar describes does not exist")
    if stat.S_ISLNK(st.st_mode):
        raise SidecarError(f"{name!r} is a symlink: put the file itself in the seed directory")
    if not stat.S_ISREG(st.st_mode):
        raise SidecarError(f"{name!r} is not a regular file")
    if st.st_size > MAX_SIZE_BYTES:
        raise SidecarError(f"{name!r} is {st.st_size} bytes; filecast takes at most 1 TiB")


def check_sidecar_file(st: os.stat_result) -> None:
    """The ``lstat`` of the sidecar itself, before it is read."""
    if stat.S_ISLNK(st.st_mode):
        raise SidecarError("the sidecar is a symlink: put the sidecar itself in the seed directory")
    if not stat.S_ISREG(st.st_mode):
        raise SidecarError("the sidecar is not a regular file")
    if st.st_size > MAX_SIDECAR_BYTES:
        raise SidecarError(f"the sidecar is {st.st_size} bytes; at most {MAX_SIDECAR_BYTES}")


def parse_sidecar(raw: bytes, now: float) -> Sidecar:
    """A sidecar's bytes → its targets and retention, or ``SidecarError``."""
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"the sidecar is over {MAX_SIDECAR_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SidecarError(f"the sidecar is not UTF-8 text (byte {exc.start})") from None
    data = _load_yaml(text)
    if data is None:
        raise SidecarError("the sidecar is empty: it needs at least `target: PATH`")
    if not isinstance(data, dict):
        raise SidecarError("the sidecar must be a mapping (`target: PATH`, `retention: …`)")
    for key in data:
        if key not in KNOWN_KEYS:
            raise SidecarError(f"unknown key {str(key)[:40]!r} (known: {', '.join(KNOWN_KEYS)})")
    if "target" not in data:
        raise SidecarError("the key `target` is missing (a path, or a list of paths)")
    targets = _targets(data["target"])
    retention = _retention(data.get("retention", RetentionKind.UNTIL_REVOKED.value), now)
    return Sidecar(targets, retention)


def _targets(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise SidecarError("`target` is an empty list: name at least one path")
    if len(items) > MAX_TARGETS:
        raise SidecarError(f"`target` lists {len(items)} paths; at most {MAX_TARGETS}")
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            what = "a list of paths" if isinstance(value, list) else "a path"
            raise SidecarError(f"`target` must be {what} as text, not {_kind(item)}")
        try:
            validate_target(item)
        except InvalidTarget as exc:
            raise SidecarError(f"`target`: {exc.reason}") from None
        if item in seen:
            raise SidecarError(f"`target` lists {item!r} twice")
        seen.add(item)
    return tuple(items)


def _retention(value: Any, now: float) -> Retention:
    if not isinstance(value, str):
        raise SidecarError(
            f"`retention` must be text (until_revoked, pinned or expires_at:<unix seconds>), "
            f"not {_kind(value)}"
        )
    try:
        return parse_retention(value, now)
    except InvalidRetention as exc:
        raise SidecarError(f"`retention`: {exc.reason}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {bool: "true/false", int: "a number", float: "a number", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` after an event pass that refuses what a sidecar never needs:
    anchors and aliases (the billion-laughs bomb), tags, several documents, and more
    nodes than a sidecar of ``MAX_TARGETS`` targets has. Duplicate keys are refused."""
    import yaml  # lazy: only a seeder with sidecars pays for it

    try:
        documents = 0
        for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), 1):
            if events > MAX_YAML_EVENTS:
                raise SidecarError("the sidecar has more YAML nodes than a sidecar needs")
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise SidecarError("YAML anchors and aliases (&, *) are not allowed in a sidecar")
            if getattr(event, "tag", None) is not None and not isinstance(
                event, yaml.DocumentStartEvent
            ):
                raise SidecarError("YAML tags (!, !!) are not allowed in a sidecar")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise SidecarError("the sidecar holds more than one YAML document")
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SidecarError(f"the sidecar is not valid YAML{at}: {problem}") from None


@functools.cache
def _strict_loader() -> type[Any]:
    """SafeLoader that also refuses a key given twice (PyYAML keeps the last one)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            for key in keys:
                if keys.count(key) > 1:
                    raise SidecarError(f"the key {key[:40]!r} appears twice")
            return super().construct_mapping(node, deep=deep)

    return StrictLoader
