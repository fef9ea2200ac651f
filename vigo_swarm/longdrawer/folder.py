"""One person's ``~/longdrawer/`` on disk: scan it into index entries, apply peers'
versions to it. Blocking; the service runs these through ``trio.to_thread``.

The daemon runs as root in a folder a person controls, so (Syncthing's
CVE-2017-1000420 and directory→symlink swaps):

1. Nothing is read or written through a symlink. Scans walk with ``os.fwalk``
   (directory fds, symlinks never followed, each directory checked to be the one
   ``lstat`` saw); writes go through ``materialize.walk_dirs`` (every component opened
   ``O_NOFOLLOW`` relative to its parent's fd) and the final name is created
   ``O_EXCL | O_NOFOLLOW`` as a temporary beside it, then renamed.
2. Only what the person owns is read: an entry whose owner is not the person's uid is
   skipped (a hard link to someone else's file never leaves the machine).
3. Files appear whole: written unnamed (``O_TMPFILE``) in the same directory, owned
   by the person, its mode and mtime set, its whole SHA-256 checked against the
   entry, fsynced, only then linked as a temporary name and renamed over the name;
   the directory is fsynced.
4. A peer's version replaces a path only while the disk still shows what the index
   says (``Stale`` otherwise: the caller rescans first, so an unindexed local edit is
   never overwritten). A file that changes while it is hashed is not indexed
   (``changing``) until it is quiet.
5. A large file's content enters the blob store (``add_file``) when it is indexed, so
   what a peer fetches is an immutable snapshot: a file that changes while it is being
   sent never materializes torn anywhere. A small one (served whole, ``/small``) is
   only hashed: ``read_indexed`` serves it straight from the folder, and only while
   its bytes still match the indexed hash — a changed file is not served (the
   partner asks again after the rescan), so it never arrives torn either.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..blobstore import BlobError, BlobStore, describe_bytes
from ..durable import SequentialWriter, copy_hashing
from ..materialize import MaterializeError, walk_dirs
from .batch import SMALL_BLOB_BYTES
from .index import MODE_BITS, Decision, Entry, Kind
from .paths import TMP_PREFIX, BadPath, IgnoreRules, parent_of, validate_path
from .vv import VersionVector

FOLDER = "longdrawer"
LARGE_FILE_CHUNKS = 64  # a large file is cut into about this many chunks (chunk_bytes_for)
MAX_CHUNK_BYTES = 4 << 20
HASH_THREADS = 8  # files hashed and copied into the store side by side during a scan
MAX_HASH_JOBS = 256  # files open at once for that
MAX_SMALL_FILE = 64 * 1024  # .longdrawerignore, config.yaml


class FolderError(Exception):
    """A path could not be scanned or written; the message says which and why."""


class Stale(FolderError):
    """The disk no longer shows what the index says: rescan the path first."""


@dataclass(frozen=True, slots=True)
class Person:
    login: str
    uid: int
    gid: int
    home: Path
    pid: str  # keyed hash of the login (announce.person_id)

    @property
    def root(self) -> Path:
        return self.home / FOLDER


@dataclass(slots=True)
class ScanResult:
    changed: list[tuple[Entry, str]] = field(default_factory=list)  # new versions
    disk_only: list[tuple[str, str]] = field(default_factory=list)  # (path, new signature)
    changing: list[str] = field(default_factory=list)  # modified while hashed
    skipped: list[str] = field(default_factory=list)  # not the person's, odd type, bad name


@dataclass(slots=True)
class _Job:
    """A file being hashed by the scan's pool (``fd`` is closed by the job)."""

    future: Future[tuple[Entry, str] | None]
    fd: int
    path: str
    old: tuple[Entry, str] | None

    def cancel(self) -> None:
        self.future.cancel()

    def cancelled(self) -> bool:
        return self.future.cancelled()

    def result(self) -> tuple[Entry, str] | None:
        return self.future.result()


@dataclass(slots=True)
class _Walk:
    """One scan's state: what the index holds, what was found, the hashing pool."""

    index: dict[str, tuple[Entry, str]]
    rules: IgnoreRules
    result: ScanResult
    pool: ThreadPoolExecutor
    seen: set[str] = field(default_factory=set)
    pruned: list[str] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)


def disk_sig(st: os.stat_result) -> str:
    return (
        f"{stat.S_IFMT(st.st_mode):o}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:"
        f"{st.st_mode & MODE_BITS:o}:{st.st_uid}"
    )


def _kind(st: os.stat_result) -> Kind | None:
    if stat.S_ISREG(st.st_mode):
        return Kind.FILE
    if stat.S_ISDIR(st.st_mode):
        return Kind.DIR
    if stat.S_ISLNK(st.st_mode):
        return Kind.SYMLINK
    return None  # fifos, sockets, devices are not synced


def read_person_file(person: Person, dirs: list[str], name: str) -> bytes | None:
    """A small file the person owns (config.yaml, .longdrawerignore), never via a symlink."""
    try:
        with walk_dirs(person.home, dirs, create=False, make_root=False, label="~/") as fds:
            if len(fds) < len(dirs) + 1:
                return None
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1])
            except FileNotFoundError:
                return None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != person.uid:
                    raise FolderError(f"~/{'/'.join([*dirs, name])}: not a file you own; ignored")
                if st.st_size > MAX_SMALL_FILE:
                    raise FolderError(f"~/{'/'.join([*dirs, name])}: over 64 KiB; ignored")
                return os.read(fd, MAX_SMALL_FILE + 1)
            finally:
                os.close(fd)
    except (OSError, MaterializeError) as exc:
        raise FolderError(f"~/{'/'.join([*dirs, name])}: {exc}") from exc


class Folder:
    """Scan and write one person's folder; ``envoy`` is this envoy's UUID string."""

    def __init__(self, person: Person, envoy: str, store: BlobStore, chunk_bytes: int) -> None:
        self.person = person
        self.envoy = envoy
        self.store = store
        self.chunk_bytes = chunk_bytes

    def chunk_bytes_for(self, size: int) -> int:
        """How a file of ``size`` bytes is chunked: ``chunk_bytes`` (the setting), or
        for a large file bigger chunks, about LARGE_FILE_CHUNKS of them up to
        MAX_CHUNK_BYTES (256 MiB -> 4 MiB): between two or three machines there is
        no rarity to spread, and every chunk costs a request (a 1 GiB transfer ran at
        0.34 of nginx in 1 MiB chunks, 0.41 in 4 MiB ones; bench/transfer.py)."""
        wanted = -(-size // LARGE_FILE_CHUNKS)
        chunk = 1 << max(0, (wanted - 1).bit_length())  # a power of two >= wanted
        return max(self.chunk_bytes, min(MAX_CHUNK_BYTES, chunk))

    # ------------------------------------------------------------------ scanning

    def scan(
        self, index: dict[str, tuple[Entry, str]], rules: IgnoreRules, under: str = ""
    ) -> ScanResult:
        """Compare the disk with the index below ``under`` ("" = everything).

        Files to hash are hashed (and copied into the store) by a few threads side by
        side: their fsyncs then share the journal's commits, so a thousand new small
        files take a fraction of a second, not one fsync round after another."""
        with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="ld-hash") as pool:
            walk = _Walk(index, rules, ScanResult(), pool)
            try:
                self._scan(walk, under)
            except BaseException:
                for job in walk.jobs:
                    job.cancel()  # not started yet: its fd is still ours to close
                    if job.cancelled():
                        os.close(job.fd)
                raise
            for job in walk.jobs:
                self._finish(walk, job.path, job.old, job.result())
        result = walk.result
        now = _now_ns()
        prefix = under + "/" if under else ""
        for path, (entry, _) in index.items():
            if entry.deleted or path in walk.seen:
                continue
            if under and path != under and not path.startswith(prefix):
                continue
            if rules.ignored(path) or any(path.startswith(p + "/") for p in walk.pruned):
                continue
            result.changed.append((entry.tombstone(self.envoy, now), ""))
        return result

    def _scan(self, walk: _Walk, under: str) -> None:
        dirs = under.split("/") if under else []
        try:
            with walk_dirs(
                self.person.root, dirs[:-1], create=False, make_root=False, label="~/longdrawer/"
            ) as fds:
                if len(fds) == len(dirs[:-1]) + 1:
                    start_fd = fds[-1]
                    if dirs:
                        kind = self._scan_one(walk, start_fd, under, dirs[-1])
                        if kind is Kind.DIR:
                            self._walk(walk, start_fd, dirs[-1], under)
                    else:
                        self._walk(walk, start_fd, ".", "")
        except (OSError, MaterializeError) as exc:
            raise FolderError(f"scanning ~/longdrawer/{under}: {exc}") from exc

    def _walk(self, walk: _Walk, parent_fd: int, name: str, rel: str) -> None:
        for dirpath, dirnames, filenames, dfd in os.fwalk(
            name, dir_fd=parent_fd, follow_symlinks=False
        ):
            base = dirpath[len(name) :].lstrip("/")
            here = "/".join(p for p in (rel, base) if p)
            keep = []
            for child in sorted(dirnames + filenames):
                path = f"{here}/{child}" if here else child
                kind = self._scan_one(walk, dfd, path, child)
                if child in dirnames and kind is Kind.DIR:
                    keep.append(child)
                elif child in dirnames and path not in walk.seen:
                    walk.pruned.append(path)
            dirnames[:] = keep

    def _scan_one(self, walk: _Walk, dfd: int, path: str, name: str) -> Kind | None:
        result = walk.result
        try:
            validate_path(path)
        except BadPath:
            result.skipped.append(path.encode("utf-8", "replace").decode())
            return None
        if name.startswith(TMP_PREFIX):
            # Left by a write that was killed: remove. (A write links its temporary
            # only once it is whole, just before renaming it: never one in progress.)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
            return None
        if walk.rules.ignored(path):
            return None
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        kind = _kind(st)
        if kind is None or st.st_uid != self.person.uid:
            result.skipped.append(path)
            return None
        walk.seen.add(path)
        sig = disk_sig(st)
        old = walk.index.get(path)
        if old is not None and not old[0].deleted and old[1] == sig:
            return kind
        if kind is not Kind.FILE:
            self._finish(walk, path, old, self._describe_other(dfd, name, path, kind, st))
            return kind
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except FileNotFoundError:
            return kind  # gone meanwhile: the next scan sees
        try:
            before = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if before.st_ino != st.st_ino or not stat.S_ISREG(before.st_mode):
            os.close(fd)
            result.changing.append(path)
            return kind
        if len(walk.jobs) >= MAX_HASH_JOBS:  # bound the fds held open
            job = walk.jobs.pop(0)
            self._finish(walk, job.path, job.old, job.result())
        walk.jobs.append(
            _Job(walk.pool.submit(self._describe_file, fd, path, before), fd, path, old)
        )
        return kind

    def _finish(
        self,
        walk: _Walk,
        path: str,
        old: tuple[Entry, str] | None,
        fresh: tuple[Entry, str] | None,
    ) -> None:
        result = walk.result
        if fresh is None:
            result.changing.append(path)
            return
        entry, sig = fresh
        if old is not None and not old[0].deleted and old[0].same_content(entry):
            result.disk_only.append((path, sig))  # touched, same bytes: no new version
            return
        vv = old[0].vv if old is not None else VersionVector()
        result.changed.append((replace(entry, vv=vv.bump(self.envoy)), sig))

    def _describe_other(
        self, dfd: int, name: str, path: str, kind: Kind, st: os.stat_result
    ) -> tuple[Entry, str] | None:
        base = Entry(
            path, kind, VersionVector(), self.envoy, st.st_mode & MODE_BITS, st.st_mtime_ns
        )
        if kind is Kind.SYMLINK:
            target = os.readlink(name, dir_fd=dfd)
            if not target or "\0" in target:
                return None
            return replace(base, target=target), disk_sig(st)
        return base, disk_sig(st)

    def _describe_file(
        self, fd: int, path: str, before: os.stat_result
    ) -> tuple[Entry, str] | None:
        """Hash the open file — a large one copied into the store as it is hashed, a
        small one only read (see 5 above) — and close ``fd``; None if it changed
        meanwhile."""
        try:
            try:
                if before.st_size <= min(SMALL_BLOB_BYTES, self.chunk_bytes):
                    info = describe_bytes(_read_upto(fd, before.st_size + 1), self.chunk_bytes)
                else:
                    # The open fd, reopened through /proc: the very file we checked.
                    chunking = self.chunk_bytes_for(before.st_size)
                    info = self.store.add_file(f"/proc/self/fd/{fd}", chunking)
            except BlobError as exc:
                raise FolderError(f"~/longdrawer/{path}: {exc}") from exc
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            before.st_size,
            before.st_mtime_ns,
            before.st_ctime_ns,
        ) or info.size_bytes != after.st_size:
            return None  # written to while we hashed: index it when it is quiet
        entry = Entry(
            path,
            Kind.FILE,
            VersionVector(),
            self.envoy,
            mode=after.st_mode & MODE_BITS,
            mtime_ns=after.st_mtime_ns,
            size=info.size_bytes,
            sha256=info.sha256,
            chunk_bytes=info.chunk_bytes,
            chunks=info.chunk_hashes,
        )
        return entry, disk_sig(after)

    def read_indexed(self, path: str, sha256: str, size: int) -> bytes | None:
        """The bytes of a small indexed file, if the disk still holds exactly them (the
        person's own regular file, reached without following a symlink); else None."""
        name = path.rpartition("/")[2]
        try:
            validate_path(path)
            with self._parent(path, create=False) as dfd:
                if dfd is None:
                    return None
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode) or st.st_uid != self.person.uid:
                        return None
                    data = _read_upto(fd, size + 1)
                finally:
                    os.close(fd)
        except (OSError, MaterializeError, BadPath):
            return None
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            return None  # changed since it was indexed: the rescan makes a new version
        return data

    # ------------------------------------------------------------------ applying

    @contextlib.contextmanager
    def _parent(self, path: str, create: bool) -> Iterator[int | None]:
        parent = parent_of(path)
        dirs = parent.split("/") if parent else []
        owner = (self.person.uid, self.person.gid)
        with walk_dirs(
            self.person.root,
            dirs,
            create=create,
            owner=owner,
            make_root=False,
            label="~/longdrawer/",
        ) as fds:
            yield fds[-1] if len(fds) == len(dirs) + 1 else None

    def apply(
        self, decision: Decision, local: tuple[Entry, str] | None, data: bytes | None = None
    ) -> str:
        """Make the disk show ``decision.entry``; returns the new disk signature. A
        file's bytes come from ``data`` when given (a small file received whole, checked
        against the entry here), else from its blob in the store.

        Raises Stale (rescan first), FolderError (refused or failed; nothing half-done
        is visible).
        """
        entry = decision.entry
        assert entry is not None
        try:
            validate_path(entry.path)
            return self._apply(entry, decision.copy_to, local, data)
        except (OSError, MaterializeError, BadPath) as exc:
            raise FolderError(f"writing ~/longdrawer/{entry.path}: {exc}") from exc

    def _apply(
        self, entry: Entry, copy_to: str, local: tuple[Entry, str] | None, data: bytes | None
    ) -> str:
        name = entry.path.rpartition("/")[2]
        with self._parent(entry.path, create=not entry.deleted) as dfd:
            if dfd is None:  # the parent is gone: so is the path
                if local is not None and not local[0].deleted:
                    raise Stale(f"~/longdrawer/{entry.path}: its directory disappeared")
                return ""
            try:
                st: os.stat_result | None = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            expected = local[1] if local is not None and not local[0].deleted else ""
            adopt = entry.kind is Kind.DIR and st is not None and stat.S_ISDIR(st.st_mode)
            if not adopt and (disk_sig(st) if st is not None else "") != expected:
                raise Stale(f"~/longdrawer/{entry.path} changed on disk since it was indexed")
            if copy_to and st is not None:
                copy_name = validate_path(copy_to).rpartition("/")[2]
                os.rename(name, copy_name, src_dir_fd=dfd, dst_dir_fd=dfd)
                st = None
            if entry.deleted:
                if st is not None:
                    self._remove(dfd, name, st)
                os.fsync(dfd)
                return ""
            if st is not None and _kind(st) is Kind.DIR and entry.kind is not Kind.DIR:
                self._remove(dfd, name, st)
                st = None
            if entry.kind is Kind.DIR:
                return self._make_dir(dfd, name, entry, st)
            same = local is not None and local[0].same_content(entry)
            if same and st is not None and _kind(st) is entry.kind:
                return expected  # same bytes already: only the vector changes
            tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                if entry.kind is Kind.SYMLINK:
                    os.symlink(entry.target, tmp, dir_fd=dfd)
                    os.chown(
                        tmp, self.person.uid, self.person.gid, dir_fd=dfd, follow_symlinks=False
                    )
                    os.utime(
                        tmp, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dfd, follow_symlinks=False
                    )
                else:
                    self._write_file(dfd, tmp, entry, data)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            os.fsync(dfd)
            return disk_sig(os.stat(name, dir_fd=dfd, follow_symlinks=False))

    def _remove(self, dfd: int, name: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise FolderError(f"{name}: directory not empty; kept") from exc
                raise
        else:
            os.unlink(name, dir_fd=dfd)

    def _make_dir(self, dfd: int, name: str, entry: Entry, st: os.stat_result | None) -> str:
        if st is None:
            os.mkdir(name, 0o700, dir_fd=dfd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            if st is None:
                os.fchown(fd, self.person.uid, self.person.gid)
            os.fchmod(fd, entry.mode)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            os.fsync(dfd)
            return disk_sig(os.fstat(fd))
        finally:
            os.close(fd)

    def _write_file(self, dfd: int, tmp: str, entry: Entry, data: bytes | None) -> None:
        """Write the entry's bytes (``data``, else its blob) as ``tmp`` in the directory
        ``dfd``, whole: the file is written unnamed (``O_TMPFILE``), checked against
        the entry's hash, fsynced, and only then linked as ``tmp`` — a daemon killed
        while writing leaves nothing in the folder."""
        src = -1
        if data is None:
            blob = self.store.blob_path(entry.sha256)
            if blob is None:
                raise FolderError(f"{entry.path}: blob {entry.sha256[:12]} is not in the store")
            src = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fd, named = _open_unnamed(dfd, tmp)
            try:
                os.fchown(fd, self.person.uid, self.person.gid)
                digest, out = hashlib.sha256(), SequentialWriter(fd, direct=data is None)
                if data is None:
                    copy_hashing(lambda buf: os.readv(src, [buf]), out, digest.update)
                else:
                    digest.update(data)
                    out.write(memoryview(data))
                if digest.hexdigest() != entry.sha256:
                    raise FolderError(f"{entry.path}: the bytes do not match their hash")
                os.fchmod(fd, entry.mode)
                os.fsync(fd)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
                if not named:
                    os.link(f"/proc/self/fd/{fd}", tmp, dst_dir_fd=dfd, follow_symlinks=True)
            finally:
                os.close(fd)
        finally:
            if src >= 0:
                os.close(src)


def _read_upto(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``'s start (fewer at end of file)."""
    parts, size = [], 0
    while size < limit and (part := os.pread(fd, limit - size, size)):
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _open_unnamed(dfd: int, tmp: str) -> tuple[int, bool]:
    """An unnamed file in the directory (``O_TMPFILE``), or — where the filesystem has
    none — ``tmp`` created ``O_EXCL``; the flag says which (True: named already)."""
    try:
        return os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600, dir_fd=dfd), False
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    return os.open(tmp, flags, 0o600, dir_fd=dfd), True


def _now_ns() -> int:
    import time

    return time.time_ns()
