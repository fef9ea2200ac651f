"""Sidecars on a seeder: ``NAME`` + ``NAME.swarm`` in a seed directory get distributed.

``SidecarScanner`` looks at the top level of each ``seed_dirs`` directory when it
starts, whenever something there changes (watchfiles), and every ``rescan_s`` as a
safety net. For each ``NAME.swarm`` it checks the sidecar and the file beside it
(``vigo_swarm.sidecar``, pure), hashes the file into its chunk list, and asks the server
lite — over mTLS with this envoy's certificate — to publish it
(``POST /api/v1/swarm/filecast/seeded``). The server checks everything again and signs
the records itself (the single signer); its answer's records are merged into our
manifest at once and spread by gossip. ``FilecastService`` then seeds the blob from the
file here, found by hash through ``file_for``.

Invariants:

1. Nothing is sent for a pair that does not check out: a malformed sidecar, a missing,
   symlinked, special or oversized file. Its error is in ``status()`` and logged once
   per distinct message (not at every scan).
2. A pair is hashed and published only once its files have been still for
   ``settle_s`` (a copy in progress is not distributed half-written), and it is
   re-checked after hashing: a file that changed meanwhile waits for the next round.
3. A file is hashed again only when its ``lstat`` identity (device, inode, size, mtime,
   ctime) changed; a request the server already accepted in this process is not sent
   again. Across restarts the server answers ``unchanged`` and signs nothing.
4. A failed publication (server down, this envoy not a seeder) is retried at most every
   ``retry_s``; the error is in status meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from vigo_swarm import http11
from vigo_swarm.blobstore import BlobInfo, describe_file
from vigo_swarm.gossip import ManifestGossip, decode_records
from vigo_swarm.manifest import MalformedSummary, default_chunk_bytes
from vigo_swarm.sidecar import (
    MAX_SIDECAR_BYTES,
    SUFFIX,
    Sidecar,
    SidecarError,
    check_data_file,
    check_sidecar_file,
    data_name,
    is_sidecar_name,
    parse_sidecar,
)

from .checkin import CheckinError, CheckinService, server_message

log = logging.getLogger(__name__)

SEEDED_PATH = "/api/v1/swarm/filecast/seeded"
Signature = tuple[int, int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    """What changes when a file is replaced or written (the rename of a new copy too)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def publish_body(sidecar_path: Path, sidecar: Sidecar, info: BlobInfo) -> dict[str, Any]:
    """Pure: the request the server's ``filecast_seeded`` parses."""
    return {
        "sidecar": str(sidecar_path),
        "targets": list(sidecar.targets),
        "retention": sidecar.retention_text,
        "blob": {
            "sha256": info.sha256,
            "size_bytes": info.size_bytes,
            "chunk_bytes": info.chunk_bytes,
            "chunks_digest": info.chunks_digest,
        },
    }


@dataclass(slots=True)
class SidecarState:
    sidecar: Path
    state: str = "pending"  # pending | settling | hashing | publishing | published | error
    error: str = ""
    parsed: Sidecar | None = None
    info: BlobInfo | None = None
    current: dict[str, str] = field(default_factory=dict)  # target -> live | revoked | …
    published_at: float | None = None
    sig: tuple[Signature, Signature] | None = None
    sent: str = ""  # the body the server last accepted (JSON), this process
    retry_at: float = 0.0
    logged: str = ""

    @property
    def file(self) -> Path:
        """``NAME`` beside ``NAME.swarm`` (for ``.swarm`` alone: the directory, which
        ``data_name`` refuses before anything is read)."""
        return self.sidecar.parent / self.sidecar.name.removesuffix(SUFFIX)

    def view(self) -> dict[str, Any]:
        p, info = self.parsed, self.info
        return {
            "sidecar": str(self.sidecar),
            "file": str(self.file),
            "state": self.state,
            "error": self.error,
            "targets": list(p.targets) if p else [],
            "retention": p.retention_text if p else None,
            "blob": info.sha256 if info else None,
            "size_bytes": info.size_bytes if info else None,
            "current": dict(self.current),
            "published_at": self.published_at,
        }


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _read_sidecar(path: Path) -> bytes:
    """At most one byte over the limit, never through a symlink, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise SidecarError("the sidecar is not a regular file")
        return f.read(MAX_SIDECAR_BYTES + 1)


@dataclass(slots=True)
class SidecarScanner:
    seed_dirs: tuple[Path, ...]
    checkin: CheckinService  # its connection to the server (our client certificate)
    gossip: ManifestGossip
    rescan_s: float = 60.0
    settle_s: float = 2.0
    retry_s: float = 15.0
    sidecars: dict[Path, SidecarState] = field(default_factory=dict)
    dir_errors: dict[Path, str] = field(default_factory=dict)
    scans: int = 0
    _wake: trio.Event = field(default_factory=trio.Event)

    # ------------------------------------------------------------------ queries

    def file_for(self, sha256: str) -> Path | None:
        """The seed-dir file a checked pair describes as blob ``sha256``, if any."""
        for st in self.sidecars.values():
            if st.info is not None and st.info.sha256 == sha256 and st.state != "error":
                return st.file
        return None

    def status(self) -> list[dict[str, Any]]:
        out = [
            {"sidecar": str(d), "file": None, "state": "error", "error": e}
            for d, e in sorted(self.dir_errors.items())
        ]
        return out + [self.sidecars[p].view() for p in sorted(self.sidecars)]

    def trigger(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            task_status.started()
            while True:
                self._wake = trio.Event()
                delay = await self.scan_once()
                with trio.move_on_after(delay):
                    await self._wake.wait()

    async def _watch(self) -> None:
        """Wake the scanner on any change in an existing seed dir (not recursive)."""
        import anyio
        import watchfiles

        dirs = [d for d in self.seed_dirs if d.is_dir()]
        if not dirs:
            return
        stop = anyio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_set_when_cancelled, stop)
                async for _changes in watchfiles.awatch(
                    *dirs, debounce=100, step=20, stop_event=stop, recursive=False
                ):
                    self._wake.set()
                nursery.cancel_scope.cancel()
        except (OSError, RuntimeError) as exc:
            log.warning(
                "sidecars: cannot watch %s (%s); rescanning every %g s", dirs, exc, self.rescan_s
            )

    async def scan_once(self) -> float:
        """Look at every sidecar once; return the seconds until the next look is due."""
        self.scans += 1
        now = time.time()
        found = await trio.to_thread.run_sync(self._list)
        for gone in set(self.sidecars) - found:
            log.info("sidecars: %s is gone; its file is no longer seeded from here", gone)
            del self.sidecars[gone]
        due = now + self.rescan_s
        for path in sorted(found):
            st = self.sidecars.setdefault(path, SidecarState(path))
            try:
                await self._check(st, now)
            except SidecarError as exc:
                self._fail(st, str(exc))
            if st.state == "settling" and st.sig is not None:
                due = min(due, self._settled_at(st.sig) + 0.05)
            elif st.state == "error" and st.info is not None and st.retry_at:
                due = min(due, st.retry_at)
        return max(0.0, due - time.time())

    def _list(self) -> set[Path]:
        found: set[Path] = set()
        for d in self.seed_dirs:
            try:
                with os.scandir(d) as entries:
                    found |= {d / e.name for e in entries if is_sidecar_name(e.name)}
            except OSError as exc:
                problem = f"seed directory {d}: {exc.strerror or exc}"
                if self.dir_errors.get(d) != problem:
                    log.warning("sidecars: %s", problem)
                self.dir_errors[d] = problem
            else:
                self.dir_errors.pop(d, None)
        return found

    def _settled_at(self, sig: tuple[Signature, Signature]) -> float:
        # ctime, not mtime: every write and rename moves it, and no one sets it (cp -p
        # and touch -d can put an mtime in the past or the future)
        return max(sig[0][4], sig[1][4]) / 1e9 + self.settle_s

    def _fail(self, st: SidecarState, problem: str) -> None:
        st.state, st.error = "error", problem
        if problem != st.logged:  # once per distinct error, not at every scan
            log.warning("sidecars: %s: %s", st.sidecar, problem)
            st.logged = problem

    async def _check(self, st: SidecarState, now: float) -> None:
        name = data_name(st.sidecar.name)
        side = _lstat(st.sidecar)
        if side is None:
            raise SidecarError("the sidecar vanished while it was being read")
        check_sidecar_file(side)
        data = _lstat(st.file)
        check_data_file(name, data)
        assert data is not None
        sig = (signature(side), signature(data))
        if sig != st.sig:  # something changed: check it all again once it is still
            st.sig, st.parsed, st.info, st.retry_at = sig, None, None, 0.0
        if now < self._settled_at(sig):
            st.state, st.error = "settling", ""
            return
        if st.parsed is None:
            raw = await trio.to_thread.run_sync(_read_sidecar, st.sidecar)
            st.parsed = parse_sidecar(raw, now)
        if st.info is None:
            st.state = "hashing"
            try:
                chunk = default_chunk_bytes(sig[1][2])  # the settled size
                info = await trio.to_thread.run_sync(describe_file, st.file, chunk)
            except OSError as exc:
                raise SidecarError(f"cannot read {name!r}: {exc.strerror or exc}") from None
            after = _lstat(st.file)
            if after is None or signature(after) != sig[1]:
                st.sig = None  # changed while hashed: wait until it is still again
                st.state, st.error = "settling", ""
                return
            st.info = info
        body = json.dumps(publish_body(st.sidecar, st.parsed, st.info))
        if body == st.sent:
            st.state, st.error = "published", ""
            return
        if now < st.retry_at:
            return
        await self._publish(st, body)

    async def _publish(self, st: SidecarState, body: str) -> None:
        st.state = "publishing"
        try:
            answer = await self._post(body)
        except CheckinError as exc:
            st.retry_at = time.time() + self.retry_s
            self._fail(st, f"{exc}; retrying")
            return
        st.sent, st.state, st.error, st.logged = body, "published", "", ""
        st.published_at = time.time()
        st.current = {
            str(t.get("target")): str(t.get("current")) for t in answer.get("targets", [])
        }
        try:
            records, bad = decode_records(answer.get("records"))
        except MalformedSummary as exc:
            log.warning("sidecars: the server's answer for %s: %s", st.sidecar, exc)
            return
        for reason in bad:
            log.warning("sidecars: refused a record from the server: %s", reason)
        if records:
            await self.gossip.merge(records, "server")
        assert st.info is not None
        outcomes = ", ".join(f"{t}: {c}" for t, c in st.current.items())
        log.info("sidecars: %s -> blob %s (%s)", st.sidecar, st.info.sha256[:12], outcomes)

    async def _post(self, body: str) -> dict[str, Any]:
        async with await self.checkin.connect() as conn:
            try:
                resp = await conn.request(
                    "POST",
                    SEEDED_PATH,
                    body=body.encode(),
                    headers={"content-type": "application/json"},
                    max_body=8 << 20,
                )
            except http11.ClientError as exc:
                raise CheckinError(f"server unreachable: {exc}") from exc
            if resp.status not in (200, 201):
                raise CheckinError(
                    f"the server refused to publish it ({resp.status}): {server_message(resp)}"
                )
            try:
                answer = resp.json()
            except http11.ClientError as exc:
                raise CheckinError(f"malformed answer from the server: {exc}") from exc
        if not isinstance(answer, dict):
            raise CheckinError("malformed answer from the server: not an object")
        return answer


async def _set_when_cancelled(stop: Any) -> None:
    """watchfiles' thread returns within one ``step`` of ``stop`` being set, so the
    daemon's shutdown is not held up for its 5 s timeout."""
    try:
        await trio.sleep_forever()
    finally:
        stop.set()
