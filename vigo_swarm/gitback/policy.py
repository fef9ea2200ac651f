"""Who may take part in gitback: the host patterns and the people who opted in. Pure.

The server's ``server.yaml`` holds ``swarm.gitback.enabled``, a list of hostname
patterns (shell globs, ``*`` ``?`` ``[…]``, matched against the lower-cased hostname in
an envoy's *certificate*). The first pattern that matches decides; a leading ``-``
makes it a deny; a hostname no pattern matches is denied (default deny). One list
decides both which envoys may publish their people's repositories and which may hold
mirrors. ``gitback: true`` per person (a login name) is the second gate: only those
people's repositories are scanned, published and accepted.

Envoys learn both at check-in (``GitbackPolicy``); until the first answer the policy is
``DENY_ALL``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_PATTERNS = 256
MAX_PATTERN_CHARS = 253
MAX_USERS = 10_000
_PATTERN_RE = re.compile(r"-?[a-z0-9.*?\[\]!_-]+")
# a POSIX portable login name (useradd's default rule), no leading '-'
USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


class PolicyError(ValueError):
    """A pattern list or user list that we refuse; the message says which item."""


def check_pattern(pattern: object) -> str:
    """One pattern, validated: lower-case hostname characters and glob syntax."""
    if not isinstance(pattern, str) or not pattern:
        raise PolicyError(f"a pattern must be a non-empty string, not {pattern!r}")
    if len(pattern) > MAX_PATTERN_CHARS or not _PATTERN_RE.fullmatch(pattern):
        raise PolicyError(
            f"pattern {pattern[:80]!r} may hold only a-z 0-9 . - _ and the globs * ? [ ] "
            "(a leading - denies)"
        )
    if pattern == "-":
        raise PolicyError("pattern '-' denies nothing: put a glob after the '-'")
    return pattern


def check_patterns(patterns: object) -> tuple[str, ...]:
    if not isinstance(patterns, list | tuple):
        raise PolicyError("the patterns must be a list of strings")
    if len(patterns) > MAX_PATTERNS:
        raise PolicyError(f"at most {MAX_PATTERNS} patterns")
    return tuple(check_pattern(p) for p in patterns)


def check_user(name: object) -> str:
    if not isinstance(name, str) or not USER_RE.fullmatch(name):
        raise PolicyError(f"{str(name)[:40]!r} is not a login name ([a-z_][a-z0-9_.-]{{0,31}})")
    return name


def host_allowed(patterns: Iterable[str], hostname: str | None) -> bool:
    """First match wins; ``-pattern`` denies; no match denies."""
    if not hostname:
        return False
    name = hostname.lower()
    for pattern in patterns:
        deny = pattern.startswith("-")
        if fnmatch.fnmatchcase(name, pattern[1:] if deny else pattern):
            return not deny
    return False


@dataclass(frozen=True, slots=True)
class GitbackPolicy:
    patterns: tuple[str, ...] = ()
    users: frozenset[str] = frozenset()

    def allows_host(self, hostname: str | None) -> bool:
        return host_allowed(self.patterns, hostname)

    def opted_in(self, user: str) -> bool:
        return user in self.users

    def to_wire(self) -> dict[str, list[str]]:
        return {"enabled": list(self.patterns), "users": sorted(self.users)}


DENY_ALL = GitbackPolicy()


def policy_from_wire(obj: object) -> GitbackPolicy:
    """The ``gitback`` object of a check-in answer, strictly: ``PolicyError`` if bad."""
    if not isinstance(obj, dict) or set(obj) != {"enabled", "users"}:
        raise PolicyError('gitback must be {"enabled": [patterns], "users": [names]}')
    users = obj["users"]
    if not isinstance(users, list) or len(users) > MAX_USERS:
        raise PolicyError(f"gitback users must be a list of at most {MAX_USERS} names")
    return GitbackPolicy(check_patterns(obj["enabled"]), frozenset(check_user(u) for u in users))
