"""The admin API surface: tokens, auth, limits, the OpenAPI document, the CA endpoint."""

from __future__ import annotations

import pytest

from vigo_server_lite.api import ROUTES, App
from vigo_server_lite.filecast import DISTRIBUTE_PARAMS
from vigo_swarm import pki

from .conftest import Harness, error_code

ADMIN_ROUTES = [
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/0123abcd"),
    ("GET", "/api/v1/envoys"),
    ("GET", "/api/v1/envoys/web01"),
    ("POST", "/api/v1/envoys/0b7c5d1e-0000-4000-8000-000000000000/revoke"),
    ("POST", "/api/v1/swarm/filecast?target=etc/motd"),
    ("GET", "/api/v1/swarm/filecast"),
    ("POST", "/api/v1/swarm/filecast/revoke"),
    ("GET", "/api/v1/swarm/filecast/status"),
    ("GET", "/api/v1/swarm/seeders"),
    ("POST", "/api/v1/swarm/seeders"),
    ("DELETE", "/api/v1/swarm/seeders/web01"),
]


async def test_health_and_ca_need_no_auth(srv: Harness) -> None:
    async with srv.client() as c:
        health = await c.get("/api/v1/health")
        ca = await c.get("/api/v1/ca")
    assert health.json()["status"] == "ok" and health.json()["version"]
    assert ca.headers["content-type"] == "application/x-pem-file"
    assert pki.cert_fingerprint(ca.content) == srv.server.app.ca.fingerprint
    assert b"PRIVATE" not in ca.content


async def test_token_create_list_revoke(srv: Harness) -> None:
    created = await srv.admin(
        "POST", "/tokens", {"ttl_s": 600, "max_uses": 4, "description": "rack 7"}
    )
    assert set(created) >= {"id", "token", "expires_at", "max_uses", "uses"}
    assert (created["max_uses"], created["uses"], created["state"]) == (4, 0, "active")
    assert created["expires_at"] == pytest.approx(srv.clock.now + 600)
    prefix, token_id, secret, fingerprint = created["token"].split(".")
    assert (prefix, token_id) == ("vigo1", created["id"])
    assert fingerprint == srv.server.app.ca.fingerprint and len(secret) >= 22

    async with srv.client() as c:
        listing = await c.get("/api/v1/tokens", headers=srv.admin_headers)
    assert secret not in listing.text and "token" not in listing.json()["tokens"][0]
    assert [t["description"] for t in listing.json()["tokens"]] == ["rack 7"]

    revoked = await srv.admin("DELETE", f"/tokens/{token_id}")
    assert revoked["state"] == "revoked" and revoked["revoked_at"] is not None
    again = await srv.admin("DELETE", f"/tokens/{token_id}")  # idempotent
    assert again["revoked_at"] == revoked["revoked_at"]
    async with srv.client() as c:
        missing = await c.delete("/api/v1/tokens/ffffffff", headers=srv.admin_headers)
    assert missing.status_code == 404 and error_code(missing) == "token_not_found"


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
async def test_admin_routes_need_the_bearer_token(
    srv: Harness, method: str, path: str, auth: str | None
) -> None:
    headers = {"authorization": auth} if auth else {}
    async with srv.client() as c:
        resp = await c.request(method, path, headers=headers, json={} if method == "POST" else None)
    assert resp.status_code == 401 and error_code(resp) == "unauthorized"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b"", 400, "empty_body"),
        (b"[1, 2]", 400, "bad_request"),
        (b'{"ttl_s": -5}', 400, "bad_request"),
        (b'{"max_uses": 0}', 400, "bad_request"),
        (b"\xff\xfe", 400, "bad_json"),
        (b'{"ttl_s": 60, "extra": ' + b"1" * 5000 + b"}", 413, "too_large"),
    ],
)
async def test_token_create_rejects_bad_bodies(
    srv: Harness, body: bytes, status: int, code: str
) -> None:
    async with srv.client() as c:
        resp = await c.post("/api/v1/tokens", content=body, headers=srv.admin_headers)
    assert (resp.status_code, error_code(resp)) == (status, code)
    assert (await srv.admin("GET", "/tokens"))["tokens"] == []


async def test_oversized_enroll_body_is_413(srv: Harness) -> None:
    async with srv.client() as c:
        resp = await c.post("/api/v1/enroll", content=b"x" * (64 * 1024))
    assert resp.status_code == 413 and error_code(resp) == "too_large"


async def test_unknown_route_and_method(srv: Harness) -> None:
    async with srv.client() as c:
        assert (await c.get("/api/v1/nope")).status_code == 404
        assert (await c.get("/api/v1/../../etc/passwd")).status_code == 404
        resp = await c.put("/api/v1/tokens", headers=srv.admin_headers)
    assert resp.status_code == 405


async def test_envoy_show_and_revoke_not_found(srv: Harness) -> None:
    async with srv.client() as c:
        h = srv.admin_headers
        assert error_code(await c.get("/api/v1/envoys/ghost", headers=h)) == "envoy_not_found"
        assert error_code(await c.get("/api/v1/envoys/bad_name!", headers=h)) == "bad_hostname"
        resp = await c.post("/api/v1/envoys/not-a-uuid/revoke", headers=h)
        assert resp.status_code == 400
        resp = await c.post(f"/api/v1/envoys/{ADMIN_ROUTES[5][1].split('/')[4]}/revoke", headers=h)
        assert resp.status_code == 404


async def test_openapi_lists_exactly_the_routes(srv: Harness) -> None:
    async with srv.client() as c:
        doc = (await c.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routed = {(method, path) for method, path, _, _ in ROUTES}
    assert documented == routed
    # and every route is really wired to a handler on the app
    for _, _, name, _ in ROUTES:
        assert callable(getattr(App, name))
    for path, ops in doc["paths"].items():
        for op in ops.values():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(path.replace("}", "{").split("{")[1::2])
    upload = doc["paths"]["/api/v1/swarm/filecast"]["post"]
    assert {p["name"] for p in upload["parameters"] if p["in"] == "query"} == DISTRIBUTE_PARAMS
