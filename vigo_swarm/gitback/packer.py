"""The seeder's side: find a person's gitback repos, notice ref changes, pack bundles.

Blocking IO (through ``trio.to_thread``). What runs as whom:

- root only *looks*: it walks ``~/gitback`` through directory fds opened with
  ``O_NOFOLLOW`` (a symlinked ``gitback`` or project dir is refused, as is one another
  user owns), reads ``.gitback.yaml`` the same way (a regular file the person owns, at
  most 16 KiB), and ``lstat``s ref files for a cheap change fingerprint;
- git runs **as the person** (``gitcmd``): ``for-each-ref``, ``merge-base`` and
  ``bundle create -``, whose stdout is a file root opened in our staging dir — the
  person's process never sees a path of ours.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vigo_swarm.puddle import Person

from .gitcmd import GitError, parse_ref_lines, run_git
from .records import PROJECT_RE, check_ref
from .repoconfig import (
    FILE_NAME,
    MAX_REPOCONFIG_BYTES,
    RepoConfig,
    RepoConfigError,
    parse_repo_config,
)

GITBACK_DIR = "gitback"
MAX_PROJECTS = 1000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    path: Path  # ~/gitback/<name>
    git_dir: Path | None  # <path>/.git, or <path> for a bare repo; None if neither
    config: RepoConfig | None
    error: str = ""  # why it is not mirrored (bad .gitback.yaml, not a repo, …)


@contextlib.contextmanager
def _dir_fd(name: str | Path, owner: int, dir_fd: int | None = None) -> Iterator[int]:
    """A directory fd, refused if it is a symlink or not ``owner``'s."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_uid != owner:
            raise PermissionError(f"{name} is not owned by uid {owner}")
        yield fd
    finally:
        os.close(fd)


def _read_config(project_fd: int, owner: int) -> RepoConfig | None:
    """``.gitback.yaml`` of a project dir, or None when there is none (not mirrored)."""
    try:
        fd = os.open(FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=project_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink
        message = f"{FILE_NAME} cannot be opened ({exc.strerror}); is it a symlink?"
        raise RepoConfigError(message) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RepoConfigError(f"{FILE_NAME} is not a regular file")
        if st.st_uid != owner:
            raise RepoConfigError(f"{FILE_NAME} is not owned by the person")
        raw = os.read(fd, MAX_REPOCONFIG_BYTES + 1)
    finally:
        os.close(fd)
    return parse_repo_config(raw)


def _git_dir(project_fd: int, path: Path) -> Path | None:
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(".git", dir_fd=project_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return path / ".git"
        return None  # a gitfile (worktree/submodule) or a symlink: not supported
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISREG(os.stat("HEAD", dir_fd=project_fd, follow_symlinks=False).st_mode):
            return path  # a bare repository
    return None


def find_projects(person: Person) -> list[Project]:
    """Every ``~/gitback/<project>/`` that has a ``.gitback.yaml`` (ignored otherwise)."""
    found: list[Project] = []
    try:
        with (
            _dir_fd(person.home, person.uid) as home_fd,
            _dir_fd(GITBACK_DIR, person.uid, home_fd) as gb_fd,
        ):
            names = sorted(os.listdir(gb_fd))[:MAX_PROJECTS]
            for name in names:
                if not PROJECT_RE.fullmatch(name):
                    continue
                path = person.home / GITBACK_DIR / name
                try:
                    with _dir_fd(name, person.uid, gb_fd) as pfd:
                        config = _read_config(pfd, person.uid)
                        if config is None:
                            continue
                        git_dir = _git_dir(pfd, path)
                except RepoConfigError as exc:
                    found.append(Project(name, path, None, None, str(exc)))
                    continue
                except (NotADirectoryError, PermissionError, FileNotFoundError):
                    continue  # a file, someone else's, or gone: not a project
                except OSError as exc:  # ELOOP: a symlinked project dir
                    found.append(Project(name, path, None, None, f"cannot open: {exc.strerror}"))
                    continue
                error = "" if git_dir else "not a git repository (.git dir or bare repo)"
                found.append(Project(name, path, git_dir, config, error))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    except OSError:  # ELOOP: ~/gitback is a symlink
        return []
    return found


def refs_fingerprint(git_dir: Path) -> tuple[tuple[str, int, int, int], ...]:
    """A cheap summary of the ref files (lstat only): it changes when a ref moves."""
    marks: list[tuple[str, int, int, int]] = []
    for rel in ("HEAD", "packed-refs"):
        with contextlib.suppress(OSError):
            st = os.lstat(git_dir / rel)
            marks.append((rel, st.st_mtime_ns, st.st_size, st.st_ino))
    for top in ("refs/heads", "refs/tags"):
        for dirpath, _dirs, files in os.walk(git_dir / top, followlinks=False):
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    rel = os.path.relpath(os.path.join(dirpath, name), git_dir)
                    marks.append((rel, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sorted(marks))


def read_tips(person: Person, git_dir: Path) -> tuple[dict[str, str], str]:
    """(refs/heads and refs/tags → object id, the branch HEAD names or ""), as the
    person. A ref name we could not mirror is a ``RecordRejected``."""
    out = run_git(
        ["--git-dir", str(git_dir), "for-each-ref", "--format=%(objectname) %(refname)",
         "refs/heads", "refs/tags"],
        person=person,
    ).stdout  # fmt: skip
    tips = parse_ref_lines(out)
    for ref in tips:
        check_ref(ref)
    head = (
        run_git(
            ["--git-dir", str(git_dir), "symbolic-ref", "-q", "HEAD"],
            person=person,
            ok_codes=(0, 1),
        )
        .stdout.decode("utf-8", "replace")
        .strip()
    )
    return tips, head if head.startswith("refs/heads/") else ""


def pack_bundle(person: Person, git_dir: Path, exclude: list[str], out: IO[bytes]) -> bool:
    """Write a bundle of every head and tag into ``out``, as the person: everything
    (``exclude`` empty) or only what is not reachable from ``exclude`` (the tips last
    distributed). False when there is nothing new to put in it (git refuses an empty
    bundle: e.g. a new branch at an old commit); the caller packs a full one then."""
    args = ["--git-dir", str(git_dir), "bundle", "create", "--quiet", "-", "--branches", "--tags"]
    args += [f"^{oid}" for oid in exclude]
    try:
        run_git(args, person=person, stdout=out)
    except GitError as exc:
        if exclude and "empty bundle" in exc.stderr:
            return False
        raise
    return True
