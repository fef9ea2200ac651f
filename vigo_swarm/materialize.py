"""Materialization: the target symlinks under ``<state>/swarm/files/``.

An operator's target (``etc/motd``) becomes ``files/etc/motd``, a symlink to the
complete blob ``.blobs/<sha256>``.

Invariants:

1. A target is validated (``validate_target``, the manifest's rules) before the
   filesystem is touched.
2. Nothing is created, replaced or removed outside ``files_root``: every step below it is
   taken relative to a directory fd opened with ``O_NOFOLLOW``, so a component that is —
   or becomes, mid-operation — a symlink is refused, never followed (Syncthing's
   CVE-2017-1000420; directory→symlink TOCTOU swaps). ``files_root`` itself must not be
   a symlink.
3. A target is replaced atomically (a symlink made beside it, then ``rename``): a
   reader sees the old link or the new one, never neither.
4. Only our own symlinks (to ``<...>/.blobs/<sha256>``) are replaced or removed; a
   regular file, a directory or a foreign symlink at a target is refused and left alone.
5. ``unmaterialize`` prunes the parent directories it leaves empty, up to (not
   including) ``files_root``.

Exceptions::

    MaterializeError                 base; also wraps OSError (e.g. ENOSPC) with context
     └── TargetRefused               the tree under files/ is not ours to use: a symlink or
                                     non-directory component, a non-symlink at the target
    manifest.InvalidTarget           (ValueError-like, from validate_target) a bad target
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .manifest import InvalidTarget, validate_target

__all__ = [
    "InvalidTarget",
    "MaterializeError",
    "TargetRefused",
    "is_blob_link",
    "materialize",
    "unmaterialize",
    "validate_target",
    "walk_dirs",
]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")
_ATTEMPTS = 3  # a component that keeps changing under us is refused after this


class MaterializeError(Exception):
    """Base of the errors materialization raises (besides InvalidTarget)."""


class TargetRefused(MaterializeError):
    """The tree under files/ has something in the way that is not ours to use."""


def is_blob_link(link_text: str) -> bool:
    """True for a symlink text of ours: an absolute ``.../.blobs/<64 lowercase hex>``."""
    parts = link_text.split("/")
    return (
        link_text.startswith("/")
        and len(parts) >= 3
        and parts[-2] == ".blobs"
        and _BLOB_NAME.fullmatch(parts[-1]) is not None
        and "" not in parts[1:]
        and not {".", ".."} & set(parts)
    )


def materialize(
    files_root: str | os.PathLike[str], target: str, blob_path: str | os.PathLike[str]
) -> Path:
    """Create or atomically replace ``files_root/target`` as a symlink to ``blob_path``.

    ``blob_path`` must be a complete blob (a regular file named ``.blobs/<sha256>``).
    Returns the path of the link. Intermediate directories are created (0755).
    """
    target = validate_target(target)
    link = os.path.abspath(blob_path)
    if not is_blob_link(link):
        raise MaterializeError(f"{link} is not a blob path (.blobs/<sha256>)")
    try:
        is_file = stat.S_ISREG(os.stat(link, follow_symlinks=False).st_mode)
    except OSError:
        is_file = False
    if not is_file:
        raise MaterializeError(f"{link} is not a complete blob (missing, or not a regular file)")
    *dirs, name = target.split("/")
    with _context(f"materializing {target!r}"), walk_dirs(files_root, dirs, create=True) as fds:
        current = _our_link(fds[-1], name, target)
        if current == link:
            return Path(files_root, target)
        tmp = f".vigo-{secrets.token_hex(8)}.tmp"
        os.symlink(link, tmp, dir_fd=fds[-1])
        try:
            os.rename(tmp, name, src_dir_fd=fds[-1], dst_dir_fd=fds[-1])
        except OSError as exc:
            os.unlink(tmp, dir_fd=fds[-1])
            if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise TargetRefused(f"files/{target} became a directory; left alone") from exc
            raise
        os.fsync(fds[-1])
    return Path(files_root, target)


def unmaterialize(files_root: str | os.PathLike[str], target: str) -> bool:
    """Remove ``files_root/target`` if it is our symlink; True if one was removed.

    Never removes a regular file, a directory or a foreign symlink (TargetRefused).
    Then removes the parent directories left empty, up to ``files_root``.
    """
    target = validate_target(target)
    *dirs, name = target.split("/")
    with _context(f"removing {target!r}"), walk_dirs(files_root, dirs, create=False) as fds:
        if len(fds) < len(dirs) + 1 or _our_link(fds[-1], name, target) is None:
            return False
        os.unlink(name, dir_fd=fds[-1])
        os.fsync(fds[-1])
        for depth in range(len(dirs) - 1, -1, -1):  # fds[depth] is the parent of dirs[depth]
            try:
                os.rmdir(dirs[depth], dir_fd=fds[depth])
            except OSError:
                break  # not empty (or changed under us): keep it and everything above
            os.fsync(fds[depth])
    return True


def _our_link(dir_fd: int, name: str, target: str) -> str | None:
    """The text of our symlink at ``name``, None if nothing is there; else refuse."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISLNK(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a symlink"
        raise TargetRefused(f"files/{target} exists and is {kind}; left alone")
    text = os.readlink(name, dir_fd=dir_fd)
    if not is_blob_link(text):
        raise TargetRefused(f"files/{target} is a symlink not made by us ({text!r:.80})")
    return text


@contextlib.contextmanager
def walk_dirs(
    root: str | os.PathLike[str],
    dirs: list[str],
    *,
    create: bool,
    owner: tuple[int, int] | None = None,
    make_root: bool = True,
    label: str = "files/",
) -> Iterator[list[int]]:
    """Open ``root`` and then each of ``dirs`` below it, without following any symlink.

    Yields the fds, root first. With ``create`` missing directories are made (0755, and
    given to ``owner`` (uid, gid) when set; ``root`` itself only with ``make_root``);
    without, the walk stops at the first missing one (fewer fds than ``len(dirs) + 1``).
    ``label`` prefixes the paths named in errors. Longdrawer writes into people's
    folders through this walk too.
    """
    fds: list[int] = []
    try:
        if create and make_root:
            os.makedirs(root, mode=0o755, exist_ok=True)
        try:
            fds.append(os.open(root, _DIR))
        except FileNotFoundError:
            if create:
                raise
        except OSError as exc:
            raise TargetRefused(f"{root} is a symlink or not a directory: refused") from exc
        for depth, name in enumerate(dirs if fds else []):
            where = label + "/".join(dirs[: depth + 1])
            fd = _open_child(fds[-1], name, where, create, owner)
            if fd is None:
                break
            fds.append(fd)
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _open_child(
    parent: int, name: str, where: str, create: bool, owner: tuple[int, int] | None
) -> int | None:
    made = False
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(name, _DIR, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise TargetRefused(
                f"{where} is a symlink or not a directory; refusing to go through it"
            ) from exc
        else:
            if made and owner is not None:
                os.fchown(fd, *owner)  # the directory we made, through its fd: no race
            return fd
        try:
            os.mkdir(name, 0o755, dir_fd=parent)  # then open it again, still O_NOFOLLOW
            made = True
        except FileExistsError:
            pass
    raise TargetRefused(f"{where} keeps changing under us; refused")


@contextlib.contextmanager
def _context(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise MaterializeError(f"{what}: {exc.strerror or exc}") from exc
