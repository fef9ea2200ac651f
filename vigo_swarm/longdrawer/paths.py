"""Paths inside a person's ``~/longdrawer/``: validation, ignores, conflict names (pure).

Every path that crosses the wire, or is about to be written, is checked by
``validate_path`` first. A valid path is relative, uses ``/`` between components, and
no component is empty, ``.``, ``..``, longer than 255 bytes, or holds a NUL; it is
valid UTF-8 and at most 4096 bytes. A hostile peer's ``../../etc/passwd``, ``/etc``,
``a\\0b`` or ``a//b`` is refused here, before any filesystem call.

Ignored (never indexed, never applied, in either direction):

- our own temporary files (``.longdrawer-tmp-*``) and the ``.longdrawerignore`` file;
- editor temporary files: ``.*.swp``/``.swx``/``.swo`` (vim), ``4913`` (vim's probe),
  ``*~`` (emacs, gedit), ``.#*`` and ``#*#`` (emacs), ``.~lock.*#`` (LibreOffice),
  ``*.crdownload``/``*.part`` (browsers);
- each pattern in the folder's ``.longdrawerignore`` (shell globs, one per line, ``#``
  comments; a pattern without ``/`` matches a name at any depth, one with ``/`` matches
  the path from the folder root; a matched directory is ignored with all it holds).

Conflict copies are named ``name.sync-conflict-YYYYMMDD-HHMMSS-<envoy>.ext``: the
time is the losing version's modification time (UTC) and ``<envoy>`` the first 8 hex
digits of the envoy that made it, so every envoy that keeps the same losing version
names it the same way (no pile of copies of one version).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
MAX_IGNORE_PATTERNS = 1000
TMP_PREFIX = ".longdrawer-tmp-"
IGNORE_FILE = ".longdrawerignore"

EDITOR_PATTERNS = (
    ".*.swp",
    ".*.swx",
    ".*.swo",
    "4913",
    "*~",
    ".#*",
    "#*#",
    ".~lock.*#",
    "*.crdownload",
    "*.part",
)

_CONFLICT = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{8}(?=\.|$)")


class BadPath(ValueError):
    """A path that may not name anything inside a longdrawer; says which rule it broke."""


def validate_path(path: object) -> str:
    """Return ``path`` if it is a safe relative longdrawer path, else raise BadPath."""
    if not isinstance(path, str):
        raise BadPath("a path must be a string")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise BadPath(f"path {path!r:.80} is not valid UTF-8") from exc
    if not path or size > MAX_PATH_BYTES:
        raise BadPath(f"path must be 1..{MAX_PATH_BYTES} bytes")
    if "\0" in path:
        raise BadPath(f"path {path!r:.80} contains a NUL byte")
    if path.startswith("/"):
        raise BadPath(f"path {path!r:.80} is absolute")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise BadPath(f"path {path!r:.80} has an empty, '.' or '..' component")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise BadPath(f"path {path!r:.80} has a name over {MAX_NAME_BYTES} bytes")
    return path


def validate_name(name: object) -> str:
    """One path component (no ``/``)."""
    checked = validate_path(name)
    if "/" in checked:
        raise BadPath(f"name {checked!r:.80} contains '/'")
    return checked


def parent_of(path: str) -> str:
    """``a/b/c`` → ``a/b``; a top-level path → ``""``."""
    return path.rpartition("/")[0]


def depth(path: str) -> int:
    return path.count("/")


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """The folder's ignore patterns (editor temp files and ours are always ignored)."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        found = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "\0" not in line:
                found.append(line.rstrip("/") or line)
            if len(found) >= MAX_IGNORE_PATTERNS:
                break
        return cls(tuple(found))

    def ignored(self, path: str) -> bool:
        """True when ``path`` or any directory above it is ignored."""
        parts = path.split("/")
        for i, name in enumerate(parts):
            prefix = "/".join(parts[: i + 1])
            if name.startswith(TMP_PREFIX) or (i == 0 and name == IGNORE_FILE):
                return True
            if any(fnmatch.fnmatchcase(name, p) for p in EDITOR_PATTERNS):
                return True
            for pattern in self.patterns:
                target = prefix if "/" in pattern else name
                if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
                    return True
        return False


def is_conflict_copy(path: str) -> bool:
    return _CONFLICT.search(path.rpartition("/")[2]) is not None


def conflict_name(path: str, mtime_ns: int, envoy: str) -> str:
    """``dir/report.txt`` → ``dir/report.sync-conflict-20240102-030405-1a2b3c4d.txt``."""
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # no extension, or a dotfile like ".bashrc"
        stem, ext = name, ""
    when = dt.datetime.fromtimestamp(max(0, mtime_ns) / 1e9, dt.UTC).strftime("%Y%m%d-%H%M%S")
    short = envoy.replace("-", "")[:8].lower()
    suffix = f".sync-conflict-{when}-{short}" + (f".{ext}" if ext else "")
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    new = stem.encode("utf-8")[: max(1, room)].decode("utf-8", "ignore") + suffix
    return f"{head}/{new}" if head else new
