"""Gitback's control-socket operations and the daemon's person lookup for it.

    gitback.list     the mirrors this envoy holds and the repos it publishes — a person
                     sees their own, root everyone's
    gitback.restore  {seeder, project, dest[, user]}: a working repository at ``dest``
                     with every branch and tag of the mirror, made *as the caller*

A restore never lets a person read the root-owned mirror directly: the daemon (root)
writes a bundle of the mirror into a staging file, then — as the caller's uid — makes
``dest`` (``git init``), copies the bundle in through a pipe (``cat`` as the caller),
fetches every head and tag from it, and checks out the mirror's HEAD branch. Whatever
the caller could not do themselves (write ``dest``) fails as their own permission
error. Root may restore for anyone (``user``) and may also ``git clone`` the mirror path.
"""

from __future__ import annotations

import os
import pwd
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from vigo_swarm.gitback.gitcmd import GitError, run_as, run_git
from vigo_swarm.gitback.mirror import Mirror, mirror_path
from vigo_swarm.gitback.records import RecordRejected, check_person, check_project
from vigo_swarm.gitback.service import GitbackService
from vigo_swarm.puddle import Person, PuddleStateError

from .control import Caller, ControlError, ControlServer
from .puddle_ops import person_resolver

SAFE_SH = "/bin/sh"


def people_by_name(home_root: str) -> Callable[[str], Person | None]:
    """Login name → Person (home from passwd, or ``<home_root>/<name>``), None if this
    envoy has no such account."""
    resolve = person_resolver(home_root)

    def lookup(name: str) -> Person | None:
        try:
            return resolve(pwd.getpwnam(name).pw_uid)
        except (KeyError, PuddleStateError, OSError):
            return None

    return lookup


def _login(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError as exc:
        raise ControlError("bad_request", f"uid {uid} has no passwd entry") from exc


def _person_of(caller: Caller, args: dict[str, Any]) -> str | None:
    """Whose mirrors: the caller's own; root may name anyone (or no one: all)."""
    user = args.get("user")
    if user is not None:
        if not caller.is_root:
            raise ControlError("permission", "only root may act for another person")
        try:
            return check_person(user)
        except RecordRejected as exc:
            raise ControlError("bad_request", str(exc)) from exc
    return None if caller.is_root else _login(caller.uid)


def resolve_seeder(service: GitbackService, given: str) -> str:
    """A seeder by UUID or by hostname (as its certificate named it)."""
    try:
        return str(uuid.UUID(given))
    except ValueError:
        pass
    found = [u for u, h in service.hostnames.items() if h == given.lower()]
    if len(found) != 1:
        raise ControlError("not_found", f"no (single) seeder named {given[:80]!r} is known here")
    return found[0]


def restore(mirror: Mirror, person: Person, dest: Path, staging: Path) -> dict[str, Any]:
    """Blocking: see the module docstring."""
    state = mirror.state()
    if state.seq == 0:
        raise ControlError("not_found", "this mirror has received nothing yet")
    if os.path.lexists(dest):
        raise ControlError("exists", f"{dest} already exists: name a new directory")
    staging.mkdir(mode=0o700, exist_ok=True)
    bundle = staging / f"restore-{secrets.token_hex(8)}.bundle"
    try:
        mirror.export_bundle(bundle)
        run_git(["init", "--quiet", "--template=", str(dest)], person=person)
        inside = dest / ".git" / "gitback-restore.bundle"
        with open(bundle, "rb") as src:
            run_as([SAFE_SH, "-c", 'cat > "$0"', str(inside)], person=person, stdin=src)
        gd = ["--git-dir", str(dest / ".git"), "--work-tree", str(dest)]
        refspecs = ["refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*"]
        fetch = ["fetch", "--quiet", "--no-tags", "--update-head-ok", str(inside), *refspecs]
        run_git([*gd, *fetch], person=person)
        if state.head:
            run_git([*gd, "symbolic-ref", "HEAD", state.head], person=person)
        run_git([*gd, "reset", "--quiet", "--hard"], person=person, ok_codes=(0, 128))
        os.unlink(inside)  # root may: the file is the caller's, in a dir it can write
    except GitError as exc:
        raise ControlError("restore_failed", str(exc)) from exc
    finally:
        bundle.unlink(missing_ok=True)
    return {"dest": str(dest), "seq": state.seq, "head": state.head}


def register_gitback_ops(
    control: ControlServer, service: GitbackService, people: Callable[[str], Person | None]
) -> None:
    async def op_list(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        person = _person_of(caller, args)
        mirrors = service.mirrors_view(person)
        for m in mirrors:
            mirror = Mirror(Path(m["path"]))
            state = await trio.to_thread.run_sync(mirror.state)
            m["seq"], m["head"] = state.seq, state.head
            m["applied_unix"] = state.applied_unix or None
        return {
            **service.status(),
            "mirrors": mirrors,
            "published": service.published_view(person),
        }

    async def op_restore(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        user = _person_of(caller, args) or _login(caller.uid)
        try:
            project = check_project(args.get("project"))
        except RecordRejected as exc:
            raise ControlError("bad_request", str(exc)) from exc
        seeder = resolve_seeder(service, str(args.get("seeder", ""))[:255])
        dest = args.get("dest")
        if not isinstance(dest, str) or not dest.startswith("/") or "\0" in dest:
            raise ControlError("bad_request", "dest must be an absolute path")
        if ".." in dest.split("/"):
            raise ControlError("bad_request", "dest must not contain '..'")
        person = await trio.to_thread.run_sync(people, user)
        if person is None:
            raise ControlError("not_found", f"{user} has no account on this envoy")
        if person.uid != caller.uid and not caller.is_root:
            raise ControlError("permission", "a person restores only their own repositories")
        mirror = Mirror(mirror_path(service.root, seeder, user, project))
        if not mirror.exists():
            raise ControlError("not_found", f"no mirror of {user}'s {project} from {seeder} here")
        lock = service.lock_for((seeder, user, project))
        async with lock:
            return await trio.to_thread.run_sync(
                restore, mirror, person, Path(dest), service.root / "staging"
            )

    control.register("gitback.list", op_list)
    control.register("gitback.restore", op_restore)
