"""A person's ``~/.vigo-puddle/``: the wrapped identity and the signed member list.

    ~/.vigo-puddle/          0700, owned by the person
    ├── identity             0600, the wrapped identity (keys.py, 211 bytes, binary)
    ├── members.json         0600, the signed member list (members.py wire form)
    └── lockbox-state.json   0600, lockbox's record of what it wrote in ~/lockbox

The root daemon reads and writes here on the person's behalf, so every access is made
safe against the person (or anyone) planting links: the home and the puddle directory
are opened once with ``O_NOFOLLOW | O_DIRECTORY`` and every file is reached relative to
that descriptor with ``O_NOFOLLOW``; the directory and files must be owned by the
person and closed to group and others; files must be regular with one link. A write is
a new temp file (``O_EXCL``), fsynced, handed to the person (``fchown``), renamed over
the old one, and the directory fsynced. Reads validate fully before anything is used:
a damaged file is an error that names the file and changes nothing.

Blocking: call from a worker thread (``trio.to_thread``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..durable import write_all
from .errors import BadMemberList, CorruptIdentity, NoPuddle, UnsafePuddleDir
from .keys import WRAPPED_BYTES, WrappedIdentity, decode_wrapped
from .members import MemberList, members_from_wire

DIR_NAME = ".vigo-puddle"
IDENTITY_FILE = "identity"
MEMBERS_FILE = "members.json"
MAX_MEMBERS_FILE_BYTES = 64 * 1024
# companion files other subsystems keep here (same safety rules), and their size caps
EXTRA_FILES = {"lockbox-state.json": 32 << 20}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Person:
    uid: int
    gid: int
    home: Path


@dataclass(frozen=True, slots=True)
class Puddle:
    identity: WrappedIdentity
    members: MemberList

    @property
    def public_hex(self) -> str:
        return self.identity.public_key.hex()


def encode_members(members: MemberList) -> bytes:
    return json.dumps(members.to_wire(), indent=1).encode() + b"\n"


class PuddleDir:
    def __init__(self, person: Person) -> None:
        self.person = person
        self.path = person.home / DIR_NAME

    # ------------------------------------------------------------------ opening

    def _check_owned(self, st: os.stat_result, what: str, *, private: bool) -> None:
        if st.st_uid != self.person.uid:
            raise UnsafePuddleDir(f"{what} is owned by uid {st.st_uid}, not {self.person.uid}")
        if private and st.st_mode & 0o077:
            raise UnsafePuddleDir(
                f"{what} is open to group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                "chmod go= it"
            )

    @contextlib.contextmanager
    def _dir(self, *, create: bool = False) -> Iterator[int]:
        try:
            home = os.open(self.person.home, _DIR_FLAGS)
        except FileNotFoundError as exc:
            raise NoPuddle(f"home directory {self.person.home} does not exist") from exc
        except OSError as exc:
            raise UnsafePuddleDir(f"cannot open {self.person.home}: {exc.strerror}") from exc
        try:
            self._check_owned(os.fstat(home), str(self.person.home), private=False)
            fd = self._open_puddle_dir(home, create)
        finally:
            os.close(home)
        try:
            self._check_owned(os.fstat(fd), str(self.path), private=True)
            yield fd
        finally:
            os.close(fd)

    def _open_puddle_dir(self, home: int, create: bool) -> int:
        for attempt in (1, 2):
            try:
                return os.open(DIR_NAME, _DIR_FLAGS, dir_fd=home)
            except FileNotFoundError as exc:
                if not create or attempt == 2:
                    raise NoPuddle(f"no puddle here ({self.path} does not exist)") from exc
                os.mkdir(DIR_NAME, 0o700, dir_fd=home)
                if os.geteuid() == 0:
                    os.chown(
                        DIR_NAME,
                        self.person.uid,
                        self.person.gid,
                        dir_fd=home,
                        follow_symlinks=False,
                    )
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePuddleDir(f"{self.path} is not a directory (a link?)") from exc
                raise UnsafePuddleDir(f"cannot open {self.path}: {exc.strerror}") from exc
        raise AssertionError("unreachable")

    def _read(self, dirfd: int, name: str, limit: int) -> bytes:
        path = self.path / name
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd
            )
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePuddleDir(f"{path} is a symbolic link") from exc
            raise UnsafePuddleDir(f"cannot open {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise UnsafePuddleDir(f"{path} is not a regular file with one link")
            self._check_owned(st, str(path), private=True)
            data = os.read(fd, limit + 1)
        finally:
            os.close(fd)
        return data

    # -------------------------------------------------------------------- reads

    def exists(self) -> bool:
        try:
            with self._dir() as d:
                os.stat(IDENTITY_FILE, dir_fd=d, follow_symlinks=False)
        except (NoPuddle, FileNotFoundError):
            return False
        return True

    def read(self) -> Puddle:
        with self._dir() as d:
            try:
                raw = self._read(d, IDENTITY_FILE, WRAPPED_BYTES)
            except FileNotFoundError as exc:
                raise NoPuddle(f"no puddle here ({self.path / IDENTITY_FILE} is missing)") from exc
            try:
                identity = decode_wrapped(raw)
            except CorruptIdentity as exc:
                raise CorruptIdentity(f"{self.path / IDENTITY_FILE}: {exc}") from exc
            try:
                text = self._read(d, MEMBERS_FILE, MAX_MEMBERS_FILE_BYTES)
            except FileNotFoundError as exc:
                raise BadMemberList(f"{self.path / MEMBERS_FILE} is missing") from exc
        path = self.path / MEMBERS_FILE
        if len(text) > MAX_MEMBERS_FILE_BYTES:
            raise BadMemberList(f"{path} is over {MAX_MEMBERS_FILE_BYTES} bytes")
        try:
            obj = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadMemberList(f"{path} is not JSON: {exc}") from exc
        try:
            members = members_from_wire(obj, puddle=identity.public_key)
        except BadMemberList as exc:
            raise BadMemberList(f"{path}: {exc}") from exc
        return Puddle(identity, members)

    def read_extra(self, name: str) -> bytes | None:
        """A companion file (``EXTRA_FILES``), or None if it does not exist."""
        limit = EXTRA_FILES[name]
        with self._dir() as d:
            try:
                data = self._read(d, name, limit)
            except FileNotFoundError:
                return None
        if len(data) > limit:
            raise UnsafePuddleDir(f"{self.path / name} is over {limit} bytes")
        return data

    # ------------------------------------------------------------------- writes

    def write_extra(self, name: str, data: bytes) -> None:
        """Replace a companion file (``EXTRA_FILES``) of an existing puddle dir."""
        if name not in EXTRA_FILES:
            raise KeyError(name)
        with self._dir() as d:
            self._write(d, name, data)

    def _write(self, dirfd: int, name: str, data: bytes) -> None:
        tmp = f".{name}.tmp-{secrets.token_hex(6)}"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dirfd,
        )
        try:
            if os.geteuid() == 0:
                os.fchown(fd, self.person.uid, self.person.gid)
            os.fchmod(fd, 0o600)
            write_all(fd, memoryview(data), None)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
            raise
        os.close(fd)
        os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        os.fsync(dirfd)

    def create(self, puddle: Puddle) -> None:
        """A new puddle here; refuses if one exists. The identity is written last, so
        a crash in between leaves no puddle (``exists`` looks at the identity)."""
        with self._dir(create=True) as d:
            try:
                os.stat(IDENTITY_FILE, dir_fd=d, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                raise UnsafePuddleDir(f"{self.path / IDENTITY_FILE} already exists")
            self._write(d, MEMBERS_FILE, encode_members(puddle.members))
            self._write(d, IDENTITY_FILE, puddle.identity.raw)

    def replace(
        self, *, identity: WrappedIdentity | None = None, members: MemberList | None = None
    ) -> None:
        """Replace the identity and/or member list of an existing puddle."""
        with self._dir() as d:
            if members is not None:
                self._write(d, MEMBERS_FILE, encode_members(members))
            if identity is not None:
                self._write(d, IDENTITY_FILE, identity.raw)
