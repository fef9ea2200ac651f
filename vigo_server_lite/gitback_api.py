"""Gitback under ``/api/v1/swarm/gitback``: a mixin of ``api.App`` (admin bearer token).

``GET /swarm/gitback``                the host patterns (``server.yaml``
                                      ``swarm.gitback.enabled``), each active envoy and
                                      whether they allow it, and the people opted in
``GET /swarm/gitback/users``          every person with a flag
``PUT /swarm/gitback/users/{name}``   ``{"gitback": true|false}``: a person's opt-in

Envoys learn the patterns and the opted-in people at every check-in (``gitback_answer``
in the answer's ``gitback`` field); the server takes no part in the mirroring itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vigo_swarm.gitback.policy import PolicyError, check_user, host_allowed
from vigo_swarm.http11 import Request, Response, json_response

from . import gitback_db
from .errors import bad_request
from .filecast_api import _read

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import ServerConfig
    from .db import Database

log = logging.getLogger(__name__)


class GitbackRoutes:
    """Handlers named in ``api.ROUTES``; ``App`` provides the attributes below."""

    config: ServerConfig
    clock: Callable[[], float]
    db: Database

    if TYPE_CHECKING:

        def _require_admin(self, request: Request) -> None: ...

        @staticmethod
        def _body(request: Request) -> Any: ...

    async def gitback_answer(self) -> dict[str, Any]:
        """The ``gitback`` field of a check-in answer."""
        names = await self.db.run(lambda s: _read(s, gitback_db.opted_in))
        return {"enabled": list(self.config.gitback_enabled), "users": names}

    async def gitback_show(self, request: Request) -> Response:
        self._require_admin(request)
        users, envoys = await self.db.run(lambda s: (_read(s, gitback_db.users), s.list_envoys()))
        patterns = self.config.gitback_enabled
        return json_response(
            {
                "enabled": list(patterns),
                "envoys": [
                    {
                        "uuid": e.uuid,
                        "hostname": e.hostname,
                        "allowed": host_allowed(patterns, e.hostname),
                    }
                    for e in sorted(envoys, key=lambda e: e.hostname)
                    if e.state == "active"
                ],
                "users": [n for n, on, _ in users if on],
            }
        )

    async def gitback_users_list(self, request: Request) -> Response:
        self._require_admin(request)
        users = await self.db.run(lambda s: _read(s, gitback_db.users))
        return json_response(
            {"users": [{"name": n, "gitback": on, "updated_at": at} for n, on, at in users]}
        )

    async def gitback_user_set(self, request: Request) -> Response:
        self._require_admin(request)
        try:
            name = check_user(request.params["name"])
        except PolicyError as exc:
            raise bad_request(str(exc)) from None
        body = self._body(request)
        if not isinstance(body, dict) or set(body) != {"gitback"}:
            raise bad_request('the body must be {"gitback": true} or {"gitback": false}')
        flag = body["gitback"]
        if not isinstance(flag, bool):
            raise bad_request("gitback must be true or false")
        now = self.clock()
        changed = await self.db.run(
            lambda s: _read(s, lambda db: gitback_db.set_user(db, name, flag, now))
        )
        if changed:
            log.info("gitback: %s is now %s", name, "opted in" if flag else "opted out")
        return json_response({"name": name, "gitback": flag, "changed": changed})
