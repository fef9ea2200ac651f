"""A real server lite on 127.0.0.1, port 0, in-process, with a clock the test controls."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from vigo_agent.enroll import EnrollResult, enroll
from vigo_agent.paths import StatePaths
from vigo_server_lite import ServerConfig, ServerLite
from vigo_swarm import pki

BIN = Path(sys.executable).parent


class FakeClock:
    """The server's idea of now; tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    server: ServerLite
    clock: FakeClock
    tmp: Path
    counter: itertools.count[int] = dataclasses.field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ca_file(self) -> Path:
        return self.server.paths.ca_cert

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.server.admin_token}"}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTPS client that trusts the fleet CA (no client certificate)."""
        ctx = pki.client_context(self.ca_file, check_hostname=True)
        return httpx.AsyncClient(base_url=self.url, verify=ctx, trust_env=False, **kwargs)

    def envoy_client(self, state: StatePaths) -> httpx.AsyncClient:
        """An HTTPS client presenting an envoy's certificate."""
        ctx = pki.client_context(
            self.ca_file, cert_file=state.cert, key_file=state.key, check_hostname=True
        )
        return httpx.AsyncClient(base_url=self.url, verify=ctx, trust_env=False)

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        async with self.client() as c:
            resp = await c.request(method, f"/api/v1{path}", json=body, headers=self.admin_headers)
        assert resp.status_code < 300, resp.text
        return resp.json()

    async def token(self, **spec: Any) -> str:
        body = {"ttl_s": 3600, "max_uses": 1, **spec}
        answer = await self.admin("POST", "/tokens", body)
        token: str = answer["token"]
        return token

    async def enroll(self, hostname: str, token: str | None = None, **kw: Any) -> EnrollResult:
        state = (
            self.tmp / "envoys" / self.server.paths.root.name / f"{hostname}-{next(self.counter)}"
        )
        return await enroll(self.url, token or await self.token(), state, hostname=hostname, **kw)

    async def checkin(self, result: EnrollResult, body: Any | None = None) -> httpx.Response:
        payload = {"addresses": ["10.0.0.1"], "port": 1531} if body is None else body
        async with self.envoy_client(result.paths) as c:
            if isinstance(payload, bytes):
                return await c.post("/api/v1/checkin", content=payload)
            return await c.post("/api/v1/checkin", json=payload)

    async def upload(
        self, data: bytes, target: str | None = "etc/motd", **params: str
    ) -> httpx.Response:
        """POST /api/v1/swarm/filecast with the admin token and ``data`` as the body."""
        query = dict(params) if target is None else {"target": target, **params}
        headers = {**self.admin_headers, "content-type": "application/octet-stream"}
        async with self.client() as c:
            return await c.post(
                "/api/v1/swarm/filecast", params=query, content=data, headers=headers
            )

    async def distribute(self, data: bytes, target: str = "etc/motd", **params: str) -> Any:
        resp = await self.upload(data, target, **params)
        assert resp.status_code == 201, resp.text
        return resp.json()

    @property
    def seed_dir(self) -> Path:
        return self.server.paths.seed_dir

    @property
    def authority_keys(self) -> dict[str, bytes]:
        return {"server": bytes.fromhex(self.server.app.ca.authority_public_hex)}


async def start_server(
    nursery: trio.Nursery, tmp: Path, name: str = "srv", **config: Any
) -> Harness:
    clock = FakeClock()
    cfg = ServerConfig(
        data_dir=tmp / name, listen_host="127.0.0.1", listen_port=0, checkin_interval_s=7, **config
    )
    server = ServerLite(cfg, clock=clock)
    await nursery.start(server.run)
    return Harness(server, clock, tmp)


@pytest.fixture
async def srv(nursery: trio.Nursery, tmp_path: Path) -> Harness:
    return await start_server(nursery, tmp_path)


def error_code(resp: httpx.Response) -> str:
    code: str = resp.json()["error"]["code"]
    return code


async def run_cli(
    *argv: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one of our console scripts without blocking the in-process server."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIGO")}
    full_env.update(env or {})
    return await trio.run_process(
        [str(BIN / argv[0]), *argv[1:]],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=full_env,
    )


def load_json(data: bytes) -> Any:
    return json.loads(data.decode())


def admin_env(srv: Harness) -> dict[str, str]:
    """Environment for `vigocli` against ``srv`` (no config file)."""
    return {
        "VIGO_SERVER": srv.url,
        "VIGO_ADMIN_TOKEN_FILE": str(srv.server.paths.admin_token),
        "VIGO_CA_FILE": str(srv.ca_file),
        "VIGOCLI_CONFIG": "/nonexistent/vigocli.yaml",
    }
