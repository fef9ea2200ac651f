"""The filecast endpoints under ``/api/v1/swarm``: a mixin of ``api.App``.

Admin (bearer token): distribute a file (raw body), list records, revoke a target, the
fleet-wide status view. Envoy-facing (the client certificate of an active envoy, the
check-in rule): manifest sync (read-only: the server never merges an envoy's records),
and the seed directory's blob infos and chunks, the origin of last resort.

Parsing and views are pure (``filecast``, ``filecast_status``); the seed directory,
the manifest and SQLite block, so they run in worker threads.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from vigo_swarm.blobstore import is_sha256
from vigo_swarm.http11 import Request, Response, json_response
from vigo_swarm.manifest import ManifestError, default_chunk_bytes, to_wire

from . import filecast_db
from .authority import ClockBehind, FilecastAuthority
from .db import Database, Store
from .errors import Refusal, SetupError
from .filecast import (
    is_live,
    parse_distribute,
    parse_revoke,
    parse_sync,
    record_json,
    revocation_json,
)
from .filecast_seeded import Source, source_json
from .filecast_status import build_status
from .seed import ChunkingConflict, SeedCorrupt, SeedDir, SeedError, SeedFull, SeedNotFound

if TYPE_CHECKING:
    import sqlite3

    from .config import ServerConfig
    from .datadir import Prepared

log = logging.getLogger(__name__)

T = TypeVar("T")
OCTETS = "application/octet-stream"
MAX_LISTED_REVOCATIONS = 100
MAX_WATCH_S = 50  # the longest a manifest watch is held (under the 60 s request timeout)
MAX_WATCHERS = 256  # half the server's 512 connection slots: the rest stay for everything else
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,9}")


@dataclass(slots=True)
class FilecastStats:
    distributions: int = 0
    revocations: int = 0
    manifest_syncs: int = 0
    records_sent: int = 0
    chunks_served: int = 0
    chunk_bytes_served: int = 0
    corrupt_chunks: int = 0


def open_filecast(
    prepared: Prepared, now_ms: Callable[[], int]
) -> tuple[FilecastAuthority, SeedDir]:
    """Blocking: open the manifest and the seed directory (SetupError if they cannot be)."""
    ca, paths = prepared.ca, prepared.paths
    try:
        authority = FilecastAuthority(
            paths.manifest_db, ca.authority_public_hex, ca.sign_record, now_ms
        )
    except (ManifestError, OSError) as exc:
        raise SetupError(f"cannot open the filecast manifest {paths.manifest_db}: {exc}") from exc
    seed = SeedDir(paths.seed_dir)
    try:
        stale = seed.prepare()
    except SeedError as exc:
        authority.close()
        raise SetupError(str(exc)) from exc
    if stale:
        log.info("removed %d unfinished upload(s) from %s", len(stale), paths.seed_dir)
    return authority, seed


def _read(store: Store, fn: Callable[[sqlite3.Connection], T]) -> T:
    with store.transaction() as db:
        return fn(db)


class FilecastRoutes:
    """Handlers named in ``api.ROUTES``; ``App`` provides the attributes below."""

    config: ServerConfig
    clock: Callable[[], float]
    db: Database
    authority: FilecastAuthority
    seed: SeedDir
    filecast_stats: FilecastStats
    manifest_changed: trio.Event  # set (and replaced) after every record the server signs
    manifest_watchers: int
    _admitted: tuple[int, set[tuple[str, int]]]

    if TYPE_CHECKING:

        def _require_admin(self, request: Request) -> None: ...

        @staticmethod
        def _body(request: Request) -> Any: ...

    async def _require_envoy(self, request: Request) -> str:
        """The UUID of the active envoy whose verified certificate made the request.

        Good standing is cached per registry generation: a revocation or a replacement
        bumps the generation, so it takes effect on the very next request.
        """
        peer = request.peer
        if peer is None or peer.uuid is None:
            raise Refusal(
                403, "not_enrolled", "this endpoint needs an enrolled envoy's certificate"
            )
        who, serial = str(peer.uuid), peer.serial
        generation = self.db.store.generation
        cached_generation, admitted = self._admitted
        if cached_generation == generation and (who, serial) in admitted:
            return who
        await self.db.run(lambda s: s.admit(who, serial))
        if cached_generation != generation:
            admitted = set()
            self._admitted = (generation, admitted)
        admitted.add((who, serial))
        return who

    # ----------------------------------------------------------------- admin API

    async def _sign(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = await trio.to_thread.run_sync(fn, *args)
        except ClockBehind as exc:
            raise Refusal(503, "clock_behind", str(exc)) from None
        self.manifest_changed.set()  # envoys watching the manifest sync now
        self.manifest_changed = trio.Event()
        return result

    async def filecast_distribute(self, request: Request) -> Response:
        self._require_admin(request)
        now = self.clock()
        req = parse_distribute(request.query, now)
        content_type = request.headers.get("content-type", OCTETS).partition(";")[0].strip()
        if content_type.lower() != OCTETS:
            raise Refusal(
                415,
                "unsupported_media_type",
                f"send the file as the raw body with content-type {OCTETS}, not {content_type!r}",
            )
        try:
            self.authority.check_clock()
        except ClockBehind as exc:
            raise Refusal(503, "clock_behind", str(exc)) from None
        started = time.monotonic()
        try:
            info = await trio.to_thread.run_sync(
                self.seed.put, request.body, req.chunk_bytes, default_chunk_bytes(len(request.body))
            )
        except ChunkingConflict as exc:
            raise Refusal(409, "chunking_conflict", str(exc)) from None
        except SeedFull as exc:
            raise Refusal(507, "seed_full", str(exc)) from None
        result = await self._sign(
            self.authority.distribute, req.key, req.target, req.retention, info
        )
        source = Source(result.record.hlc, "upload")
        await self.db.run(
            lambda s: _read(s, lambda db: filecast_db.note_source(db, req.key, source, now))
        )
        self.filecast_stats.distributions += 1
        previous = result.previous
        log.info(
            "filecast: %s -> blob %s (%d bytes, %d chunks) as %s in %.1f s%s",
            req.target,
            info.sha256,
            info.size_bytes,
            info.num_chunks,
            req.key,
            time.monotonic() - started,
            f"; replaces blob {previous.blob}" if previous and not previous.tombstone else "",
        )
        replaced = None
        if previous is not None and not previous.tombstone:
            replaced = record_json(previous, now)
        return json_response(
            {
                "record": to_wire(result.record),
                "blob": {
                    "sha256": info.sha256,
                    "size_bytes": info.size_bytes,
                    "chunk_bytes": info.chunk_bytes,
                    "chunks": info.num_chunks,
                },
                "replaced": replaced,
                "manifest_version": self.authority.version,
            },
            201,
        )

    async def filecast_list(self, request: Request) -> Response:
        self._require_admin(request)
        now = self.clock()
        snapshot = self.authority.snapshot
        targets, sources = await self.db.run(
            lambda s: (
                _read(s, filecast_db.revocation_targets),
                _read(s, filecast_db.load_sources),
            )
        )
        tombstones = sorted(
            (r for r in snapshot.records if r.tombstone), key=lambda r: r.hlc, reverse=True
        )
        adds = sorted(
            (r for r in snapshot.records if not r.tombstone), key=lambda r: (r.targets, r.key)
        )
        return json_response(
            {
                "records": [
                    record_json(r, now) | {"source": source_json(sources.get(r.key), r.hlc)}
                    for r in adds
                ],
                "revocations": [
                    revocation_json(r, targets.get(r.key))
                    for r in tombstones[:MAX_LISTED_REVOCATIONS]
                ],
                "revocations_total": len(tombstones),
                "manifest_version": snapshot.version,
                "max_upload_bytes": self.config.filecast_max_upload_bytes,
                "server_time": now,
            }
        )

    async def filecast_revoke(self, request: Request) -> Response:
        self._require_admin(request)
        target, key = parse_revoke(self._body(request))
        now = self.clock()
        result = await self._sign(self.authority.revoke, key)
        if result is None or result.previous is None:
            raise Refusal(
                404,
                "filecast_not_found",
                f"no filecast record for target {target!r} (never distributed, or revoked)",
            )
        previous = result.previous
        await self.db.run(
            lambda s: _read(
                s, lambda db: filecast_db.note_revocation(db, key, target, previous.blob, now)
            )
        )
        self.filecast_stats.revocations += 1
        log.info("filecast: revoked %s (blob %s, %s)", target, previous.blob, key)
        return json_response(
            {
                "record": to_wire(result.record),
                "revoked": record_json(previous, now),
                "manifest_version": self.authority.version,
            }
        )

    async def filecast_status(self, request: Request) -> Response:
        self._require_admin(request)
        now = self.clock()
        snapshot = self.authority.snapshot
        live = [r for r in snapshot.records if is_live(r, now)]
        envoys, progress, sources = await self.db.run(
            lambda s: (
                s.list_envoys(),
                _read(s, filecast_db.load_progress),
                _read(s, filecast_db.load_sources),
            )
        )
        view = build_status(
            live, envoys, progress, server_version=snapshot.version, now=now, sources=sources
        )
        return json_response(view)

    # -------------------------------------------------------------- envoy-facing

    async def manifest_sync(self, request: Request) -> Response:
        await self._require_envoy(request)
        their = parse_sync(self._body(request))
        missing = await trio.to_thread.run_sync(self.authority.missing_for, their)
        self.filecast_stats.manifest_syncs += 1
        self.filecast_stats.records_sent += len(missing)
        # "want" is always empty: the server never takes records from envoys.
        return json_response({"records": [to_wire(r) for r in missing], "want": []})

    async def manifest_watch(self, request: Request) -> Response:
        """Long-poll: answered with the manifest version once it is not ``version`` (or
        after ``wait`` seconds), so envoys learn a distribution or revocation at once
        instead of at their next check-in. At most ``MAX_WATCHERS`` wait at once; over
        that, 503 ``busy`` (the envoy keeps to its check-ins)."""
        await self._require_envoy(request)
        seen, raw_wait = request.query.get("version", ""), request.query.get("wait", "0")
        try:
            wait_s = float(raw_wait)
        except ValueError:
            wait_s = -1.0
        if not 0 <= wait_s <= MAX_WATCH_S or len(seen) > 20:
            raise Refusal(400, "bad_watch", f"wait must be 0..{MAX_WATCH_S} s and version short")
        if str(self.authority.snapshot.version) == seen and wait_s > 0:
            if self.manifest_watchers >= MAX_WATCHERS:
                raise Refusal(503, "busy", "too many envoys watching; rely on check-in")
            self.manifest_watchers += 1
            try:
                with trio.move_on_after(wait_s):
                    await self.manifest_changed.wait()
            finally:
                self.manifest_watchers -= 1
        return json_response({"version": self.authority.snapshot.version})

    def _distributed(self, sha256: str) -> None:
        """Refuse a malformed hash (before any path is built) and a blob that no live
        record references (revoked content is no longer served)."""
        if not is_sha256(sha256):
            raise Refusal(400, "bad_hash", "a blob hash is 64 lowercase hex digits")
        now = self.clock()
        if not any(r.blob == sha256 and is_live(r, now) for r in self.authority.snapshot.records):
            raise Refusal(404, "blob_not_found", f"blob {sha256} is not being distributed")

    async def seed_info(self, request: Request) -> Response:
        await self._require_envoy(request)
        sha256 = request.params["sha256"]
        self._distributed(sha256)
        try:
            raw = await trio.to_thread.run_sync(self.seed.info_bytes, sha256)
        except SeedNotFound as exc:
            raise Refusal(404, "blob_not_found", str(exc)) from None
        return Response(body=raw)

    async def seed_chunk(self, request: Request) -> Response:
        await self._require_envoy(request)
        sha256, index_text = request.params["sha256"], request.params["index"]
        self._distributed(sha256)
        if not _INDEX_RE.fullmatch(index_text):
            raise Refusal(400, "bad_index", "a chunk index is a decimal integer from 0")
        try:
            data = await trio.to_thread.run_sync(self.seed.read_chunk, sha256, int(index_text))
        except SeedNotFound as exc:
            raise Refusal(404, "chunk_not_found", str(exc)) from None
        except SeedCorrupt as exc:
            self.filecast_stats.corrupt_chunks += 1
            log.error("filecast: %s; not served (re-distribute the file)", exc)
            raise Refusal(500, "seed_corrupt", str(exc)) from None
        self.filecast_stats.chunks_served += 1
        self.filecast_stats.chunk_bytes_served += len(data)
        return Response(body=data, content_type=OCTETS)
