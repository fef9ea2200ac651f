"""Running git safely: as the person on a person's repo, as root only on our mirrors.

Blocking (the service calls these through ``trio.to_thread``). Every call gets:

- a clean environment: no system or global config (``GIT_CONFIG_NOSYSTEM``,
  ``GIT_CONFIG_GLOBAL=/dev/null``), no prompts, no replace refs, no optional locks,
  ``LC_ALL=C``, a fixed ``PATH``;
- ``core.hooksPath=/dev/null`` and ``core.fsmonitor=false`` on the command line, so no
  hook or monitor program ever runs, whatever a repo's own config says;
- with ``person``: the person's uid, gid and no supplementary groups (``setgroups([])``),
  umask 077, ``HOME`` = their home. Git never runs as root on a person's repo: root
  would let a crafted repo make the daemon read or write anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vigo_swarm.puddle import Person

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_TIMEOUT_S = 600.0
SAFE_OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


class GitError(Exception):
    """git failed or could not run; the message has its exit status and stderr."""

    def __init__(self, message: str, returncode: int = -1, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str


def git_binary() -> str:
    found = shutil.which("git", path=SAFE_PATH)
    if found is None:
        raise GitError("git is not installed (looked in " + SAFE_PATH + ")")
    return found


def safe_env(home: Path | None) -> dict[str, str]:
    return {
        "PATH": SAFE_PATH,
        "HOME": str(home) if home is not None else "/nonexistent",
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_ATTR_NOSYSTEM": "1",
    }


def run_git(
    args: Sequence[str],
    *,
    person: Person | None = None,
    cwd: Path | None = None,
    stdin: IO[bytes] | int | None = None,
    input_bytes: bytes | None = None,
    stdout: IO[bytes] | int | None = None,
    ok_codes: Sequence[int] = (0,),
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> GitResult:
    """``git <safe options> args``; ``GitError`` unless the exit status is in ``ok_codes``.

    ``stdout`` may be a file the caller opened (a bundle written straight to the store's
    staging area); else it is captured."""
    return run_as(
        [git_binary(), *SAFE_OPTIONS, *args],
        person=person,
        cwd=cwd,
        stdin=stdin,
        input_bytes=input_bytes,
        stdout=stdout,
        ok_codes=ok_codes,
        timeout_s=timeout_s,
        what=f"git {_verb(args)}",
    )


def _verb(args: Sequence[str]) -> str:
    """The git command in ``args`` (skipping ``--git-dir DIR`` and options)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--git-dir":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def run_as(
    argv: Sequence[str],
    *,
    person: Person | None = None,
    cwd: Path | None = None,
    stdin: IO[bytes] | int | None = None,
    input_bytes: bytes | None = None,
    stdout: IO[bytes] | int | None = None,
    ok_codes: Sequence[int] = (0,),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    what: str = "",
) -> GitResult:
    """Run ``argv`` (a fixed program, never through a shell) with the safe environment,
    as ``person`` when given; see ``run_git``."""
    name = what or os.path.basename(argv[0])
    kwargs: dict[str, object] = {}
    if person is not None and (os.geteuid() == 0 or person.uid != os.geteuid()):
        kwargs = {"user": person.uid, "group": person.gid, "extra_groups": [], "umask": 0o077}
    try:
        done = subprocess.run(  # a fixed binary; argv never goes through a shell
            argv,
            cwd=cwd,
            env=safe_env(person.home if person is not None else None),
            stdin=None if input_bytes is not None else _or_devnull(stdin),
            input=input_bytes,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"{name} took over {timeout_s:g} s") from exc
    except OSError as exc:
        raise GitError(f"cannot run {name}: {exc}") from exc
    err = (done.stderr or b"").decode("utf-8", "replace").strip()
    if done.returncode not in ok_codes:
        last = err.splitlines()[-1] if err else "no message"
        message = f"{name} exited {done.returncode}: {last[:300]}"
        raise GitError(message, done.returncode, err)
    out = done.stdout if isinstance(done.stdout, bytes) else b""
    return GitResult(done.returncode, out, err)


def _or_devnull(stdin: IO[bytes] | int | None) -> IO[bytes] | int:
    return subprocess.DEVNULL if stdin is None else stdin


def parse_ref_lines(out: bytes) -> dict[str, str]:
    """``<oid> <refname>`` lines (for-each-ref, list-heads) → {refname: oid}."""
    refs: dict[str, str] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        oid, _, name = line.partition(" ")
        if name:
            refs[name] = oid
    return refs


def fast_forwards(
    git_dir: Path, moves: dict[str, tuple[str, str]], person: Person | None = None
) -> dict[str, bool]:
    """For each ref moved from ``old`` to ``new``: is it a fast-forward (``old`` an
    ancestor of ``new``)? A moved tag never is (tags do not move forward)."""
    answer: dict[str, bool] = {}
    for ref, (old, new) in moves.items():
        if not ref.startswith("refs/heads/"):
            answer[ref] = False
            continue
        done = run_git(
            ["--git-dir", str(git_dir), "merge-base", "--is-ancestor", old, new],
            person=person,
            ok_codes=(0, 1, 128),  # 128: old is gone (collected after a rewrite)
        )
        answer[ref] = done.returncode == 0
    return answer
