"""The server lite service: prepare the data dir, then serve the API over HTTPS.

Start it under a nursery; ``task_status.started`` receives the bound port::

    server = ServerLite(ServerConfig(data_dir=tmp, listen_host="127.0.0.1", listen_port=0))
    port = await nursery.start(server.run)
    server.url, server.paths.ca_cert, server.admin_token, server.app.stats

Cancel the nursery to stop it; the database is closed on the way out. Client
certificates are optional on this listener (admins use a bearer token), but one that
is presented must chain to the fleet CA or the handshake fails.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import trio

from vigo_swarm.http11 import HTTPSServer, ServerLimits
from vigo_swarm.pki import server_context, write_public_file

from .api import App, Clock
from .config import ServerConfig
from .datadir import DataPaths, Prepared, prepare
from .filecast_api import open_filecast

log = logging.getLogger(__name__)

# A filecast upload (up to filecast_max_upload_bytes) is read within one request's time.
LIMITS = ServerLimits(request_timeout_s=600.0)


class ServerLite:
    def __init__(self, config: ServerConfig, *, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.paths = DataPaths(config.data_dir)
        self.port: int | None = None
        self._app: App | None = None
        self._prepared: Prepared | None = None
        self.https: HTTPSServer | None = None  # its ``stats`` count handshake failures

    @property
    def app(self) -> App:
        if self._app is None:
            raise RuntimeError("the server lite has not started")
        return self._app

    @property
    def admin_token(self) -> str:
        if self._prepared is None:
            raise RuntimeError("the server lite has not started")
        return self._prepared.admin_token

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the server."""
        host = self.config.listen_host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        prepared = await trio.to_thread.run_sync(prepare, self.config)
        self._prepared = prepared
        clock = self.clock
        try:
            authority, seed = await trio.to_thread.run_sync(
                open_filecast, prepared, lambda: int(clock() * 1000)
            )
        except BaseException:
            prepared.store.close()
            raise
        app = App(prepared, self.config, self.clock, authority, seed)
        self._app = app
        try:
            ctx = server_context(
                self.paths.tls_cert,
                self.paths.tls_key,
                self.paths.ca_cert,
                require_client_cert=False,
            )
            https = self.https = HTTPSServer(
                app.router(),
                ctx,
                host=self.config.listen_host,
                port=self.config.listen_port,
                limits=LIMITS,
                name="server-lite",
            )
            async with trio.open_nursery() as nursery:
                self.port = await nursery.start(https.run)
                if self.config.ready_file is not None:
                    self._write_ready_file(self.config.ready_file)
                log.info(
                    "server lite ready at %s (CA fingerprint %s; admin token in %s)",
                    self.url,
                    prepared.ca.fingerprint,
                    self.paths.admin_token,
                )
                task_status.started(self.port)
        finally:
            app.close()

    def _write_ready_file(self, path: Path) -> None:
        """A JSON note for scripts: where the server listens and where its files are."""
        info = {
            "url": self.url,
            "port": self.port,
            "pid": os.getpid(),
            "data_dir": str(self.paths.root),
            "ca_file": str(self.paths.ca_cert),
            "ca_fingerprint": self.app.ca.fingerprint,
            "admin_token_file": str(self.paths.admin_token),
        }
        write_public_file(path, (json.dumps(info, indent=2) + "\n").encode())
