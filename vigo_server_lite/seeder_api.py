"""Seeders and their sidecars under ``/api/v1/swarm``: a mixin of ``api.App``.

Admin (bearer token): ``GET|POST /swarm/seeders``, ``DELETE /swarm/seeders/{envoy}`` —
which envoys may publish the ``NAME`` + ``NAME.swarm`` pairs of their seed directories.
A seeder is an envoy *UUID* (its certificate's identity, never a reported name): an
envoy that enrolls again under the same hostname gets a new UUID and is not a seeder
until an operator adds it again.

Envoy-facing (the client certificate of an active envoy that is a seeder):
``POST /swarm/filecast/seeded`` — the server checks the request (``filecast_seeded``),
signs one record per target with its own authority key (the single signer: the seeder
signs nothing), notes the source so ``filecast list|status`` can show it, and answers
with the signed records. The same request again from the same seeder signs nothing
(``unchanged``), also after either side restarts: an operator's later revoke or
distribute to that target stands until the seeder's file or sidecar changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vigo_swarm.http11 import Request, Response, json_response
from vigo_swarm.manifest import Record, to_wire

from . import filecast_db
from .errors import Refusal, bad_request
from .filecast import is_live, record_json
from .filecast_api import FilecastRoutes, _read
from .filecast_seeded import SeededRequest, SeededTarget, Source, parse_seeded

if TYPE_CHECKING:
    import sqlite3

    import trio

    from .registry import EnvoyRecord

log = logging.getLogger(__name__)


def current_state(held: Record | None, blob: str, now: float) -> str:
    """What the server holds now for a key a seeder published: ``live`` (its blob),
    ``replaced`` (another blob, e.g. an operator's upload), ``revoked``, ``expired``."""
    if held is None or held.tombstone:
        return "revoked"
    if held.blob != blob:
        return "replaced"
    return "live" if is_live(held, now) else "expired"


class SeederRoutes(FilecastRoutes):
    """Handlers named in ``api.ROUTES``; ``App`` provides the attributes below."""

    seeded_lock: trio.Lock

    if TYPE_CHECKING:

        async def _find_envoy(self, key: str) -> EnvoyRecord: ...

    # ----------------------------------------------------------------- admin API

    async def seeders_list(self, request: Request) -> Response:
        self._require_admin(request)
        seeders, envoys = await self.db.run(
            lambda s: (_read(s, filecast_db.seeders), s.list_envoys())
        )
        by_uuid = {e.uuid: e for e in envoys}
        return json_response(
            {
                "seeders": [
                    _seeder_json(uuid, added_at, by_uuid.get(uuid))
                    for uuid, added_at in sorted(  # by hostname: stable for people and tests
                        seeders.items(),
                        key=lambda item: (getattr(by_uuid.get(item[0]), "hostname", ""), item[0]),
                    )
                ]
            }
        )

    async def seeders_add(self, request: Request) -> Response:
        self._require_admin(request)
        body = self._body(request)
        if (
            not isinstance(body, dict)
            or set(body) != {"envoy"}
            or not isinstance(body["envoy"], str)
        ):
            raise bad_request('the body must be {"envoy": "<uuid or hostname>"}')
        envoy = await self._find_envoy(body["envoy"])
        if envoy.state != "active":
            raise Refusal(
                409, "envoy_not_active", f"envoy {envoy.uuid} ({envoy.hostname}) is {envoy.state}"
            )
        now = self.clock()
        added = await self.db.run(
            lambda s: _read(s, lambda db: filecast_db.add_seeder(db, envoy.uuid, now))
        )
        if added:
            log.info("filecast: %s (%s) is now a seeder", envoy.hostname, envoy.uuid)
        seeders = await self.db.run(lambda s: _read(s, filecast_db.seeders))
        answer = _seeder_json(envoy.uuid, seeders.get(envoy.uuid), envoy)
        return json_response({**answer, "added": added}, 201 if added else 200)

    async def seeders_remove(self, request: Request) -> Response:
        self._require_admin(request)
        envoy = await self._find_envoy(request.params["envoy"])
        removed = await self.db.run(
            lambda s: _read(s, lambda db: filecast_db.remove_seeder(db, envoy.uuid))
        )
        if not removed:
            raise Refusal(
                404, "seeder_not_found", f"envoy {envoy.uuid} ({envoy.hostname}) is not a seeder"
            )
        log.info("filecast: %s (%s) is no longer a seeder", envoy.hostname, envoy.uuid)
        return json_response(_seeder_json(envoy.uuid, None, envoy) | {"removed": True})

    # -------------------------------------------------------------- envoy-facing

    async def filecast_seeded(self, request: Request) -> Response:
        who = await self._require_envoy(request)
        if not await self.db.run(lambda s: _read(s, lambda db: filecast_db.is_seeder(db, who))):
            raise Refusal(
                403,
                "not_a_seeder",
                f"envoy {who} may not publish sidecars: an operator allows it with "
                f"`vigocli swarm seeders add {who}`",
            )
        now = self.clock()
        req = parse_seeded(self._body(request), now)
        fingerprint = req.fingerprint
        results: list[dict[str, Any]] = []
        signed: list[Record] = []
        async with self.seeded_lock:  # one seeded request at a time: check, then sign
            known = await self.db.run(
                lambda s: _read(
                    s,
                    lambda db: {
                        t.key: filecast_db.seeded_fingerprint(db, who, t.key) for t in req.targets
                    },
                )
            )
            held = {r.key: r for r in self.authority.snapshot.records}
            for t in req.targets:
                item: dict[str, Any] = {"target": t.target, "key": t.key}
                if known[t.key] == fingerprint:
                    state = current_state(held.get(t.key), req.blob.sha256, now)
                    results.append({**item, "outcome": "unchanged", "current": state})
                    continue
                record, published = await self._publish_seeded(who, t, req, now)
                signed.append(record)
                results.append({**item, **published})
        return json_response(
            {
                "targets": results,
                "records": [to_wire(r) for r in signed],
                "manifest_version": self.authority.version,
            },
            201 if signed else 200,
        )

    async def _publish_seeded(
        self, who: str, t: SeededTarget, req: SeededRequest, now: float
    ) -> tuple[Record, dict[str, Any]]:
        """Sign ``t``'s record, then note the publication and its source."""
        result = await self._sign(
            self.authority.distribute, t.key, t.target, req.retention, req.blob
        )
        record, previous = result.record, result.previous
        source = Source(record.hlc, "sidecar", who, None, req.sidecar)

        def note(db: sqlite3.Connection) -> None:
            filecast_db.note_seeded(db, who, t.key, req.fingerprint, req.sidecar, record.hlc, now)
            filecast_db.note_source(db, t.key, source, now)

        await self.db.run(lambda s: _read(s, note))
        self.filecast_stats.distributions += 1
        replaced = None
        if previous is not None and not previous.tombstone:
            replaced = record_json(previous, now)
        log.info(
            "filecast: %s -> blob %s (%d bytes) from seeder %s's sidecar %s as %s%s",
            t.target,
            req.blob.sha256,
            req.blob.size_bytes,
            who,
            req.sidecar,
            t.key,
            f"; replaces blob {previous.blob}" if replaced and previous else "",
        )
        return record, {"outcome": "published", "current": "live", "replaced": replaced}


def _seeder_json(uuid: str, added_at: float | None, envoy: EnvoyRecord | None) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "hostname": envoy.hostname if envoy else None,
        "state": envoy.state if envoy else "unknown",
        "added_at": added_at,
    }
