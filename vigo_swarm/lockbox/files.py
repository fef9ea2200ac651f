"""``~/lockbox`` on disk: scan it, read a file to encrypt, write a decrypted one.

The root daemon works in a person's home, so it trusts nothing there:

- ``~/lockbox`` is opened with ``O_NOFOLLOW | O_DIRECTORY`` and must be a directory
  owned by the person; every step below it goes through directory fds
  (``materialize.walk_dirs``), so a symlinked component is refused, never followed;
- only regular files owned by the person are read (a file another user owns, a
  symlink, a FIFO or a device is skipped and counted);
- a write is a temp file (``O_EXCL``) in the same directory, handed to the person
  (``fchown``), filled, fsynced, given its mode and mtime, and renamed over the target
  only if the target still is what we last saw (else the person's edit wins and is
  recorded on the next pass); then the directory is fsynced.

Blocking: call from a worker thread. Errors that name a path are for the person's
``status`` only — the service never logs them (no plaintext name in any log).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..materialize import MaterializeError, walk_dirs
from .errors import BadRecord, UnsafeLockbox
from .plan import Stat
from .records import RESERVED_PREFIX, validate_name

DIR_NAME = "lockbox"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_FILES = 100_000


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int
    home: Path

    @property
    def root(self) -> Path:
        return self.home / DIR_NAME


def stat_of(st: os.stat_result) -> Stat:
    return Stat(st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode) & 0o777, st.st_ino)


def ensure_root(owner: Owner) -> bool:
    """Make ``~/lockbox`` (0700, the person's) if missing; True if it was created."""
    try:
        home = os.open(owner.home, _DIR)
    except OSError as exc:
        raise UnsafeLockbox(f"cannot open {owner.home}: {exc.strerror}") from exc
    created = False
    try:
        try:
            os.mkdir(DIR_NAME, 0o700, dir_fd=home)
            created = True
            if os.geteuid() == 0:
                os.chown(DIR_NAME, owner.uid, owner.gid, dir_fd=home, follow_symlinks=False)
        except FileExistsError:
            pass
        try:
            fd = os.open(DIR_NAME, _DIR, dir_fd=home)
        except OSError as exc:
            raise UnsafeLockbox(f"{owner.root} is not a directory (a symlink?)") from exc
        try:
            if os.fstat(fd).st_uid != owner.uid:
                raise UnsafeLockbox(f"{owner.root} is not owned by uid {owner.uid}")
        finally:
            os.close(fd)
    finally:
        os.close(home)
    return created


def scan(owner: Owner) -> tuple[dict[str, Stat], int]:
    """Every syncable regular file under ``~/lockbox`` → its stat; and how many
    entries were skipped (links, special files, foreign owners, unsafe names)."""
    found: dict[str, Stat] = {}
    skipped = 0
    try:
        top = os.open(owner.root, _DIR)
    except OSError as exc:
        raise UnsafeLockbox(f"cannot open {owner.root}: {exc.strerror}") from exc
    stack: list[tuple[int, str]] = [(top, "")]
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                for name in os.listdir(fd):
                    if name.startswith(RESERVED_PREFIX):
                        continue
                    path = prefix + name
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode) and st.st_uid == owner.uid:
                        try:
                            stack.append((os.open(name, _DIR, dir_fd=fd), path + "/"))
                        except OSError:
                            skipped += 1
                        continue
                    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner.uid:
                        skipped += 1
                        continue
                    try:
                        validate_name(path)
                    except BadRecord:
                        skipped += 1
                        continue
                    found[path] = stat_of(st)
                    if len(found) > MAX_FILES:
                        raise UnsafeLockbox(f"over {MAX_FILES} files in {owner.root}")
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)
    return found, skipped


@contextlib.contextmanager
def _parent(owner: Owner, path: str, *, create: bool) -> Iterator[tuple[list[int], str]]:
    *dirs, name = validate_name(path).split("/")

    try:
        with walk_dirs(
            owner.root,
            dirs,
            create=create,
            owner=(owner.uid, owner.gid),
            make_root=False,
            label="~/lockbox/",
        ) as fds:
            yield fds, name
    except MaterializeError as exc:
        raise UnsafeLockbox(f"{path}: {exc}") from exc


@contextlib.contextmanager
def open_source(owner: Owner, path: str) -> Iterator[tuple[BinaryIO, Stat]]:
    """The person's file at ``path`` for reading, and its stat (regular, theirs)."""
    with _parent(owner, path, create=False) as (fds, name):
        if len(fds) < path.count("/") + 1:
            raise FileNotFoundError(path)
        fd = os.open(name, _READ, dir_fd=fds[-1])
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner.uid:
        os.close(fd)
        raise UnsafeLockbox(f"{path} is not a regular file of uid {owner.uid}")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb", buffering=0) as f:
        yield f, stat_of(st)


def _current(dir_fd: int, name: str) -> Stat | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return Stat(-1, -1, -1, -1)  # never equal to what we expect
    return stat_of(st)


def write_file(
    owner: Owner,
    path: str,
    *,
    mode: int,
    mtime_ns: int,
    expect: Stat | None,
    fill: Callable[[BinaryIO], None],
) -> Stat | None:
    """Atomically put ``fill``'s bytes at ``path``; None (nothing changed) if the file
    there is no longer ``expect`` (the person changed it). ``fill`` may raise: the temp
    file is removed and the target is untouched."""
    with _parent(owner, path, create=True) as (fds, name):
        parent = fds[-1]
        tmp = f"{RESERVED_PREFIX}{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent
        )
        try:
            if os.geteuid() == 0:
                os.fchown(fd, owner.uid, owner.gid)
            with os.fdopen(os.dup(fd), "wb") as f:
                fill(f)
                f.flush()
            os.fchmod(fd, mode & 0o777)
            os.fsync(fd)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            new = stat_of(os.fstat(fd))
            if _current(parent, name) != expect:
                raise _Changed
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            if isinstance(exc, _Changed):
                return None
            if isinstance(exc, OSError) and exc.errno in (errno.EISDIR, errno.ENOTEMPTY):
                raise UnsafeLockbox(f"{path} is a directory here") from exc
            raise
        finally:
            os.close(fd)
        os.fsync(parent)
    return new


def remove_file(owner: Owner, path: str, expect: Stat) -> bool:
    """Remove ``path`` if it still is ``expect``; prune directories left empty."""
    *dirs, _ = path.split("/")
    with _parent(owner, path, create=False) as (fds, name):
        if len(fds) < len(dirs) + 1 or _current(fds[-1], name) != expect:
            return False
        os.unlink(name, dir_fd=fds[-1])
        os.fsync(fds[-1])
        for depth in range(len(dirs) - 1, -1, -1):
            try:
                os.rmdir(dirs[depth], dir_fd=fds[depth])
            except OSError:
                break
    return True


class _Changed(Exception):
    """The target changed under us (internal)."""
