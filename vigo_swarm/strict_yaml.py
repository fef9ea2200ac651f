"""Strict YAML for the small files people write (sidecars, ``.gitback.yaml``). Pure.

``load_strict_yaml`` is ``yaml.safe_load`` after an event pass that refuses what such a
file never needs: anchors and aliases (the billion-laughs bomb), tags
(``!!python/object``), several documents, and more nodes than ``max_events``. A key
given twice is refused too (PyYAML would keep the last one). Each refusal is a
``StrictYamlError`` whose message names the file by ``what`` ("a sidecar").
"""

from __future__ import annotations

import functools
from typing import Any


class StrictYamlError(ValueError):
    """The text is not YAML we accept; the message says why, for a person."""


def load_small_yaml(raw: bytes, what: str, max_bytes: int, max_events: int) -> Any:
    """``load_strict_yaml`` of a file's bytes: at most ``max_bytes``, UTF-8."""
    if len(raw) > max_bytes:
        raise StrictYamlError(f"{what} is over {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictYamlError(f"{what} is not UTF-8 text (byte {exc.start})") from None
    return load_strict_yaml(text, what, max_events)


def load_strict_yaml(text: str, what: str, max_events: int) -> Any:
    import yaml  # lazy: only callers with such a file pay for it

    try:
        documents = 0
        for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), 1):
            if events > max_events:
                raise StrictYamlError(f"{what} has more YAML nodes than it needs")
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise StrictYamlError(f"YAML anchors and aliases (&, *) are not allowed in {what}")
            if getattr(event, "tag", None) is not None and not isinstance(
                event, yaml.DocumentStartEvent
            ):
                raise StrictYamlError(f"YAML tags (!, !!) are not allowed in {what}")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise StrictYamlError(f"{what} holds more than one YAML document")
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StrictYamlError(f"{what} is not valid YAML{at}: {problem}") from None


@functools.cache
def _strict_loader() -> type[Any]:
    """SafeLoader that also refuses a key given twice (PyYAML keeps the last one)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            for key in keys:
                if keys.count(key) > 1:
                    raise StrictYamlError(f"the key {key[:40]!r} appears twice")
            return super().construct_mapping(node, deep=deep)

    return StrictLoader
