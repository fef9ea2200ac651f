"""The puddle's control-socket operations: a person's CLI → the daemon's PuddleService.

Each operation acts on the *caller's* puddle: the uid comes from ``SO_PEERCRED``
(``Caller``), and no argument can name another person, so bob's requests can only ever
reach bob's ``~/.vigo-puddle/``. The store additionally checks that the directory and
its files are owned by that uid. Puddle errors become ``ControlError`` codes:

    no_puddle  unsafe  corrupt  locked  pairing_<reason>  puddle  bad_request
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Awaitable, Callable
from typing import Any

from vigo_swarm.homes import home_of
from vigo_swarm.puddle import (
    BadMemberList,
    CorruptIdentity,
    NoPuddle,
    PairingRefused,
    Person,
    PuddleError,
    PuddleService,
    PuddleStateError,
    UnsafePuddleDir,
)

from .control import Caller, ControlError, ControlServer

MAX_IDLE_TIMEOUT_S = 30 * 86400.0


def person_resolver(home_root: str) -> Callable[[int], Person]:
    """uid → Person. Homes come from the passwd database, or, when ``home_root`` is set
    (tests, netlab: many envoys on one machine), ``<home_root>/<login name>``, created
    0700 for the person on first use."""

    def resolve(uid: int) -> Person:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError as exc:
            raise PuddleStateError(f"uid {uid} has no passwd entry") from exc
        home = home_of(entry, home_root)
        if not home_root:
            return Person(uid, entry.pw_gid, home)
        if not home.is_dir():
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(home, uid, entry.pw_gid, follow_symlinks=False)
        return Person(uid, entry.pw_gid, home)

    return resolve


def _control_error(exc: PuddleError) -> ControlError:
    message = str(exc)
    if isinstance(exc, NoPuddle):
        return ControlError(
            "no_puddle", f"{message}: run `vigo swarm puddle init` or `vigo swarm puddle join`"
        )
    if isinstance(exc, UnsafePuddleDir):
        return ControlError("unsafe", message)
    if isinstance(exc, CorruptIdentity | BadMemberList):
        return ControlError("corrupt", message)
    if isinstance(exc, PairingRefused):
        return ControlError(f"pairing_{exc.reason}", message)
    return ControlError("puddle", message)


def _str(args: dict[str, Any], name: str, max_len: int = 4096) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ControlError("bad_request", f"{name} must be a non-empty string")
    return value


def _seed(args: dict[str, Any]) -> bytes:
    text = _str(args, "seed", 64)
    try:
        seed = bytes.fromhex(text)
    except ValueError as exc:
        raise ControlError("bad_request", "seed must be 64 hex digits") from exc
    if len(seed) != 32:
        raise ControlError("bad_request", "seed must be 64 hex digits")
    return seed


def _idle(args: dict[str, Any]) -> float:
    value = args.get("idle_timeout_s", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError("bad_request", "idle_timeout_s must be a number")
    if not 0 <= value <= MAX_IDLE_TIMEOUT_S:
        raise ControlError("bad_request", f"idle_timeout_s must be 0..{MAX_IDLE_TIMEOUT_S:g}")
    return float(value)


def register_puddle_ops(control: ControlServer, service: PuddleService) -> None:
    Op = Callable[[int, dict[str, Any]], Awaitable[Any]]
    ops: dict[str, Op] = {
        "puddle.status": lambda uid, a: service.status(uid),
        "puddle.read": lambda uid, a: service.read(uid),
        "puddle.members": lambda uid, a: service.members(uid),
        "puddle.init": lambda uid, a: service.init(uid, a.get("state")),
        "puddle.unlock": lambda uid, a: service.unlock(uid, _seed(a), _idle(a)),
        "puddle.lock": lambda uid, a: service.lock(uid),
        "puddle.pair": lambda uid, a: service.pair(uid),
        "puddle.join": lambda uid, a: service.join(uid, _str(a, "envoy", 255), _str(a, "code", 9)),
        "puddle.rotate": lambda uid, a: service.rotate(uid, a.get("identity")),
    }
    for name, op in ops.items():
        control.register(name, _guarded(op))


def _guarded(op: Callable[[int, dict[str, Any]], Awaitable[Any]]) -> Any:
    async def run(caller: Caller, args: dict[str, Any]) -> Any:
        try:
            return await op(caller.uid, args)
        except PuddleError as exc:
            raise _control_error(exc) from exc

    return run
