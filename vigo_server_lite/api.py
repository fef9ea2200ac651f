"""The JSON API under ``/api/v1``: handlers, admin authentication, route table.

Handlers are thin: they parse with ``validation``/``tokens`` (pure), act through
``db.Database`` (a worker thread), and answer with ``json_response``. A ``Refusal``
raised anywhere becomes ``{"error": {"code", "message"}}`` with its status; it is
logged once at INFO with its code (never with a token secret, a key or the admin token).

Only the routes in ``ROUTES`` answer (an allowlist, not a denylist: Salt CVE-2020-11651).
Identity for ``/checkin`` and the envoy-facing ``/swarm`` routes comes only from the
verified client certificate. The filecast handlers are in ``filecast_api``, the
seeders' and their sidecars' in ``seeder_api``, gitback's in ``gitback_api``.
"""

from __future__ import annotations

import collections
import functools
import hmac
import importlib.metadata
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vigo_swarm.http11 import HTTPError, Request, Response, Router, json_response

from .authority import FilecastAuthority
from .ca import CAError, FleetCA
from .config import ServerConfig
from .datadir import Prepared
from .db import Database, Issued, Store
from .errors import Refusal, bad_request
from .filecast_api import FilecastStats
from .gitback_api import GitbackRoutes
from .openapi import openapi_document
from .registry import EnvoyRecord, FleetView, fleet_view
from .seed import SeedDir
from .seeder_api import SeederRoutes
from .tokens import TokenRecord, hash_secret, new_token, parse_token
from .validation import normalize_hostname, parse_checkin, parse_enroll, parse_token_create

log = logging.getLogger(__name__)

PEM_TYPE = "application/x-pem-file"
SMALL_BODY = 4 * 1024
ENROLL_BODY = 16 * 1024
CHECKIN_BODY = 256 * 1024  # up to 1000 filecast progress items
TARGET_BODY = 16 * 1024  # a 1 KiB target, even with every character \u-escaped
SYNC_BODY = 16 << 20  # a summary of 100 000 keys
SEEDED_BODY = 512 * 1024  # 64 targets of 1 KiB, even with every character \u-escaped
UPLOAD_BODY = -1  # stands for config.filecast_max_upload_bytes
NO_BODY = 1024

Clock = Callable[[], float]


def _version() -> str:
    try:
        return importlib.metadata.version("vigo")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(slots=True)
class ApiStats:
    """Counters for tests, the bench and (later) metrics."""

    enroll_requests: int = 0
    enrollments: int = 0
    checkins: int = 0
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)


class App(SeederRoutes, GitbackRoutes):
    def __init__(
        self,
        prepared: Prepared,
        config: ServerConfig,
        clock: Clock,
        authority: FilecastAuthority,
        seed: SeedDir,
    ) -> None:
        self.ca: FleetCA = prepared.ca
        self.server_names = prepared.server_names
        self.config = config
        self.clock = clock
        self.db = Database(prepared.store)
        self.authority = authority
        self.seed = seed
        self.stats = ApiStats()
        self.filecast_stats = FilecastStats()
        self._admin_token = prepared.admin_token.encode("ascii")
        self._view: tuple[int, FleetView] = (-1, FleetView())
        self._admitted: tuple[int, set[tuple[str, int]]] = (-1, set())
        self.seeded_lock = trio.Lock()
        self.manifest_changed = trio.Event()
        self.manifest_watchers = 0

    def close(self) -> None:
        self.db.close()
        self.authority.close()

    # ------------------------------------------------------------------ plumbing

    def router(self) -> Router:
        router = Router()
        for method, path, name, max_body in ROUTES:
            if max_body == UPLOAD_BODY:
                max_body = self.config.filecast_max_upload_bytes
            router.add(method, path, self._wrap(getattr(self, name)), max_body=max_body)
        return router

    def _wrap(
        self, fn: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except Refusal as exc:
                self.stats.refusals[exc.code] += 1
                log.info(
                    "%s %s from %s refused: %s (%s)",
                    request.method,
                    request.path,
                    request.remote,
                    exc.code,
                    exc.message,
                )
                raise HTTPError(exc.status, exc.code, exc.message) from None

        return handler

    def _require_admin(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode("utf-8", "replace"), self._admin_token
        ):
            raise Refusal(401, "unauthorized", "a valid admin bearer token is required")

    @staticmethod
    def _body(request: Request) -> Any:
        try:
            return request.json()
        except HTTPError as exc:
            raise Refusal(exc.status, exc.code, exc.message) from None

    # ------------------------------------------------------------------- public

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok", "version": _version()})

    async def get_ca(self, request: Request) -> Response:
        return Response(body=self.ca.cert_pem, content_type=PEM_TYPE)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(_version()))

    # ------------------------------------------------------------------- tokens

    async def create_token(self, request: Request) -> Response:
        self._require_admin(request)
        spec = parse_token_create(self._body(request))
        now = self.clock()
        while True:
            token = new_token(self.ca.fingerprint)
            record = TokenRecord(
                token.id,
                hash_secret(token.secret),
                spec.description,
                now,
                now + spec.ttl_s,
                spec.max_uses,
                0,
                None,
            )
            if await self.db.run(functools.partial(Store.insert_token, record=record)):
                break
        log.info(
            "created join token %s (max %d uses, ttl %d s)", token.id, spec.max_uses, spec.ttl_s
        )
        return json_response({**record.to_json(now), "token": str(token)}, 201)

    async def list_tokens(self, request: Request) -> Response:
        self._require_admin(request)
        now = self.clock()
        records = await self.db.run(Store.list_tokens)
        return json_response({"tokens": [r.to_json(now) for r in records]})

    async def revoke_token(self, request: Request) -> Response:
        self._require_admin(request)
        token_id, now = request.params["token_id"], self.clock()
        record = await self.db.run(lambda s: s.revoke_token(token_id, now))
        if record is None:
            raise Refusal(404, "token_not_found", f"no join token with id {token_id[:40]!r}")
        log.info("revoked join token %s", token_id)
        return json_response(record.to_json(now))

    # ------------------------------------------------------------------- enroll

    async def enroll(self, request: Request) -> Response:
        self.stats.enroll_requests += 1
        req = parse_enroll(self._body(request))
        token = parse_token(req.token)
        hostname = normalize_hostname(req.hostname, reserved=self.server_names)
        now = self.clock()
        ca = self.ca

        def issue(envoy_uuid: uuid.UUID) -> Issued:
            try:
                cert = ca.issue_envoy(req.csr_pem, envoy_uuid, hostname)
            except CAError as exc:
                raise Refusal(400, "bad_csr", str(exc)) from exc
            return Issued(cert.pem, cert.serial, cert.not_after.timestamp())

        done = await self.db.run(lambda s: s.enroll(token, ca.fingerprint, hostname, now, issue))
        self.stats.enrollments += 1
        log.info(
            "enrolled %s as %s with join token %s%s",
            hostname,
            done.envoy.uuid,
            token.id,
            f" (replaces {', '.join(done.replaced)})" if done.replaced else "",
        )
        return json_response(
            {
                "uuid": done.envoy.uuid,
                "hostname": hostname,
                "certificate": done.certificate_pem.decode("ascii"),
                "ca_chain": [ca.cert_pem.decode("ascii")],
                "authority_public_key": ca.authority_public_hex,
                "checkin_interval_s": self.config.checkin_interval_s,
            },
            201,
        )

    # ------------------------------------------------------------------- envoys

    async def list_envoys(self, request: Request) -> Response:
        self._require_admin(request)
        envoys = await self.db.run(Store.list_envoys)
        return json_response({"envoys": [e.to_json() for e in envoys]})

    async def show_envoy(self, request: Request) -> Response:
        self._require_admin(request)
        envoy = await self._find_envoy(request.params["envoy"])
        return json_response(envoy.to_json())

    async def _find_envoy(self, key: str) -> EnvoyRecord:
        """An envoy by UUID (any state), or the active envoy of a hostname; else 404."""
        try:
            envoy_uuid = str(uuid.UUID(key))
        except ValueError:
            hostname = normalize_hostname(key)
            envoy = await self.db.run(lambda s: s.active_envoy_named(hostname))
        else:
            envoy = await self.db.run(lambda s: s.get_envoy(envoy_uuid))
        if envoy is None:
            raise Refusal(404, "envoy_not_found", f"no active envoy {key[:80]!r}")
        return envoy

    async def revoke_envoy(self, request: Request) -> Response:
        self._require_admin(request)
        key = request.params["envoy_uuid"]
        try:
            envoy_uuid = str(uuid.UUID(key))
        except ValueError:
            raise bad_request(f"{key[:80]!r} is not a UUID: revoke envoys by UUID") from None
        now = self.clock()
        envoy = await self.db.run(lambda s: s.revoke_envoy(envoy_uuid, now))
        if envoy is None:
            raise Refusal(404, "envoy_not_found", f"no envoy {envoy_uuid}")
        log.info(
            "revoked envoy %s (%s): serials %s",
            envoy.uuid,
            envoy.hostname,
            ", ".join(envoy.serials),
        )
        return json_response(envoy.to_json())

    # ------------------------------------------------------------------ checkin

    async def checkin(self, request: Request) -> Response:
        peer = request.peer
        if peer is None or peer.uuid is None:
            raise Refusal(403, "not_enrolled", "check-in needs an enrolled envoy's certificate")
        envoy_uuid = str(peer.uuid)
        req = parse_checkin(self._body(request))
        now = self.clock()
        await self.db.run(lambda s: s.checkin(envoy_uuid, peer.serial, req, now))
        self.stats.checkins += 1
        view = await self.fleet_view()
        return json_response(
            {
                "peers": view.peers_for(envoy_uuid),
                "revoked": view.revoked.to_json(),
                "checkin_interval_s": self.config.checkin_interval_s,
                "server_time": now,
                "manifest_version": self.authority.version,
                "gitback": await self.gitback_answer(),
            }
        )

    async def fleet_view(self) -> FleetView:
        """Peer hints and the revocation list, rebuilt only when the registry changed."""
        generation, view = self._view
        if generation != self.db.store.generation:
            generation, envoys = await self.db.run(lambda s: (s.generation, s.list_envoys()))
            view = fleet_view(envoys)
            self._view = (generation, view)
        return view


# (method, path pattern, App method, max request body bytes) -- the allowlist.
ROUTES: tuple[tuple[str, str, str, int], ...] = (
    ("GET", "/api/v1/health", "health", NO_BODY),
    ("GET", "/api/v1/ca", "get_ca", NO_BODY),
    ("GET", "/api/v1/openapi.json", "openapi", NO_BODY),
    ("POST", "/api/v1/tokens", "create_token", SMALL_BODY),
    ("GET", "/api/v1/tokens", "list_tokens", NO_BODY),
    ("DELETE", "/api/v1/tokens/{token_id}", "revoke_token", NO_BODY),
    ("POST", "/api/v1/enroll", "enroll", ENROLL_BODY),
    ("GET", "/api/v1/envoys", "list_envoys", NO_BODY),
    ("GET", "/api/v1/envoys/{envoy}", "show_envoy", NO_BODY),
    ("POST", "/api/v1/envoys/{envoy_uuid}/revoke", "revoke_envoy", NO_BODY),
    ("POST", "/api/v1/checkin", "checkin", CHECKIN_BODY),
    ("POST", "/api/v1/swarm/filecast", "filecast_distribute", UPLOAD_BODY),
    ("GET", "/api/v1/swarm/filecast", "filecast_list", NO_BODY),
    ("POST", "/api/v1/swarm/filecast/revoke", "filecast_revoke", TARGET_BODY),
    ("GET", "/api/v1/swarm/filecast/status", "filecast_status", NO_BODY),
    ("POST", "/api/v1/swarm/filecast/seeded", "filecast_seeded", SEEDED_BODY),
    ("GET", "/api/v1/swarm/seeders", "seeders_list", NO_BODY),
    ("POST", "/api/v1/swarm/seeders", "seeders_add", SMALL_BODY),
    ("DELETE", "/api/v1/swarm/seeders/{envoy}", "seeders_remove", NO_BODY),
    ("POST", "/api/v1/swarm/manifest/sync", "manifest_sync", SYNC_BODY),
    ("GET", "/api/v1/swarm/manifest/watch", "manifest_watch", NO_BODY),
    ("GET", "/api/v1/swarm/seed/{sha256}/info", "seed_info", NO_BODY),
    ("GET", "/api/v1/swarm/seed/{sha256}/chunks/{index}", "seed_chunk", NO_BODY),
    ("GET", "/api/v1/swarm/gitback", "gitback_show", NO_BODY),
    ("GET", "/api/v1/swarm/gitback/users", "gitback_users_list", NO_BODY),
    ("PUT", "/api/v1/swarm/gitback/users/{name}", "gitback_user_set", SMALL_BODY),
)
