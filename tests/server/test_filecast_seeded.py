"""Seeders and sidecar publications: the operator's seeder list, and
``POST /api/v1/swarm/filecast/seeded`` — who may publish, what is checked again, what
is signed (by the server alone), idempotence, and the source shown in list and status."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from vigo_agent.enroll import EnrollResult
from vigo_swarm.manifest import from_wire, verify

from .conftest import Harness, error_code

SEEDED = "/api/v1/swarm/filecast/seeded"
CHUNK = 1 << 20


def blob(data: bytes) -> dict[str, Any]:
    """The blob facts a seeder sends for ``data`` (one chunk: digest over one hash)."""
    sha = hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256(bytes.fromhex(sha)).hexdigest()
    return {"sha256": sha, "size_bytes": len(data), "chunk_bytes": CHUNK, "chunks_digest": digest}


def body(data: bytes = b"hello\n", **over: Any) -> dict[str, Any]:
    return {
        "sidecar": "/srv/seed/motd.swarm",
        "targets": ["etc/motd"],
        "retention": "until_revoked",
        "blob": blob(data),
        **over,
    }


async def seeded(srv: Harness, envoy: EnrollResult, payload: Any) -> httpx.Response:
    async with srv.envoy_client(envoy.paths) as c:
        if isinstance(payload, bytes):
            return await c.post(SEEDED, content=payload)
        return await c.post(SEEDED, json=payload)


async def seeder(srv: Harness, hostname: str = "seed01") -> EnrollResult:
    envoy = await srv.enroll(hostname)
    added = await srv.admin("POST", "/swarm/seeders", {"envoy": hostname})
    assert added["uuid"] == str(envoy.uuid) and added["added"] is True
    return envoy


async def records(srv: Harness) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await srv.admin("GET", "/swarm/filecast"))["records"]
    return listed


async def test_seeders_add_list_remove(srv: Harness) -> None:
    token = await srv.token(max_uses=2)
    a = await srv.enroll("alpha", token)
    b = await srv.enroll("beta", token)
    assert (await srv.admin("GET", "/swarm/seeders"))["seeders"] == []

    first = await srv.admin("POST", "/swarm/seeders", {"envoy": "alpha"})
    assert (first["uuid"], first["hostname"], first["added"]) == (str(a.uuid), "alpha", True)
    again = await srv.admin("POST", "/swarm/seeders", {"envoy": str(a.uuid)})  # idempotent
    assert again["added"] is False and again["added_at"] == first["added_at"]
    await srv.admin("POST", "/swarm/seeders", {"envoy": str(b.uuid)})
    listed = (await srv.admin("GET", "/swarm/seeders"))["seeders"]
    assert [(s["hostname"], s["state"]) for s in listed] == [
        ("alpha", "active"),
        ("beta", "active"),
    ]

    removed = await srv.admin("DELETE", "/swarm/seeders/beta")
    assert removed["uuid"] == str(b.uuid) and removed["removed"] is True
    assert [s["uuid"] for s in (await srv.admin("GET", "/swarm/seeders"))["seeders"]] == [
        str(a.uuid)
    ]

    async with srv.client() as c:
        h = srv.admin_headers
        resp = await c.delete("/api/v1/swarm/seeders/beta", headers=h)
        assert resp.status_code == 404 and error_code(resp) == "seeder_not_found"
        resp = await c.post("/api/v1/swarm/seeders", json={"envoy": "nobody"}, headers=h)
        assert resp.status_code == 404 and error_code(resp) == "envoy_not_found"
        for bad in ({}, {"envoy": 5}, {"envoy": "alpha", "x": 1}, []):
            resp = await c.post("/api/v1/swarm/seeders", json=bad, headers=h)
            assert resp.status_code == 400 and error_code(resp) == "bad_request", bad
        await srv.admin("POST", f"/envoys/{b.uuid}/revoke")
        resp = await c.post("/api/v1/swarm/seeders", json={"envoy": str(b.uuid)}, headers=h)
        assert resp.status_code == 409 and error_code(resp) == "envoy_not_active"


async def test_only_an_active_seeder_may_publish(srv: Harness) -> None:
    async with srv.client() as c:  # no client certificate; the admin token does not help
        resp = await c.post(SEEDED, json=body(), headers=srv.admin_headers)
        assert resp.status_code == 403 and error_code(resp) == "not_enrolled"

    plain = await srv.enroll("web01")
    resp = await seeded(srv, plain, body())
    assert resp.status_code == 403 and error_code(resp) == "not_a_seeder"
    assert "vigocli swarm seeders add" in resp.json()["error"]["message"]

    removed = await seeder(srv, "seed02")
    await srv.admin("DELETE", f"/swarm/seeders/{removed.uuid}")
    resp = await seeded(srv, removed, body())
    assert resp.status_code == 403 and error_code(resp) == "not_a_seeder"

    revoked = await seeder(srv, "seed03")
    await srv.admin("POST", f"/envoys/{revoked.uuid}/revoke")
    resp = await seeded(srv, revoked, body())
    assert resp.status_code == 403 and error_code(resp) == "revoked"

    assert await records(srv) == []  # nothing was signed for any of them


BAD_BODIES = [
    (b"not json", "bad_json"),
    ([], "bad_request"),
    ({k: v for k, v in body().items() if k != "blob"}, "bad_request"),
    (body(extra=1), "bad_request"),
    (body(sidecar=""), "bad_request"),
    (body(sidecar="a\nb"), "bad_request"),
    (body(sidecar=7), "bad_request"),
    (body(targets="etc/motd"), "bad_target"),
    (body(targets=[]), "bad_target"),
    (body(targets=[f"t{i}" for i in range(65)]), "bad_target"),
    (body(targets=["/etc/motd"]), "bad_target"),
    (body(targets=["etc/../../root"]), "bad_target"),
    (body(targets=["etc/mo\x00td"]), "bad_target"),
    (body(targets=[""]), "bad_target"),
    (body(targets=["a" * 1025]), "bad_target"),
    (body(targets=["etc\\motd"]), "bad_target"),
    (body(targets=[7]), "bad_target"),
    (body(targets=["etc/motd", "etc/motd"]), "bad_target"),
    (body(retention="forever"), "bad_retention"),
    (body(retention="expires_at:1"), "bad_retention"),
    (body(retention=None), "bad_retention"),
    (body(blob={**blob(b"x"), "sha256": "A" * 64}), "bad_blob"),
    (body(blob={**blob(b"x"), "chunks_digest": "nope"}), "bad_blob"),
    (body(blob={**blob(b"x"), "size_bytes": -1}), "bad_blob"),
    (body(blob={**blob(b"x"), "size_bytes": 2**41}), "bad_blob"),
    (body(blob={**blob(b"x"), "size_bytes": True}), "bad_blob"),
    (body(blob={**blob(b"x"), "chunk_bytes": 1000}), "bad_blob"),
    (body(blob={**blob(b"x"), "chunk_bytes": 32 << 20}), "bad_blob"),
    (body(blob={**blob(b"x"), "more": 1}), "bad_request"),
    (body(blob="x"), "bad_request"),
]


@pytest.mark.parametrize(("payload", "code"), BAD_BODIES)
async def test_a_bad_request_is_refused_and_signs_nothing(
    srv: Harness, payload: Any, code: str
) -> None:
    envoy = await seeder(srv)
    version = (await srv.admin("GET", "/swarm/filecast"))["manifest_version"]
    resp = await seeded(srv, envoy, payload)
    assert resp.status_code == 400 and error_code(resp) == code, resp.text
    after = await srv.admin("GET", "/swarm/filecast")
    assert after["records"] == [] and after["manifest_version"] == version


async def test_publish_is_signed_by_the_server_idempotent_and_shows_its_source(
    srv: Harness,
) -> None:
    envoy = await seeder(srv)
    resp = await seeded(srv, envoy, body(targets=["etc/motd", "etc/issue"], retention="pinned"))
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    assert [(t["target"], t["outcome"]) for t in answer["targets"]] == [
        ("etc/motd", "published"),
        ("etc/issue", "published"),
    ]
    signed = [from_wire(r) for r in answer["records"]]
    for record in signed:  # the server's key signed them, as any envoy checks
        verify(record, srv.authority_keys)
        assert record.origin == "server" and record.blob == blob(b"hello\n")["sha256"]
        assert record.retention.kind == "pinned"
    listed = await records(srv)
    assert sorted(r["target"] for r in listed) == ["etc/issue", "etc/motd"]
    for r in listed:
        assert r["source"] == {
            "kind": "sidecar",
            "envoy": str(envoy.uuid),
            "hostname": "seed01",
            "sidecar": "/srv/seed/motd.swarm",
        }
    version = answer["manifest_version"]

    # the same again (e.g. the seeder restarted): nothing new is signed
    again = await seeded(srv, envoy, body(targets=["etc/motd", "etc/issue"], retention="pinned"))
    assert again.status_code == 200
    assert again.json()["records"] == [] and again.json()["manifest_version"] == version
    assert {t["outcome"] for t in again.json()["targets"]} == {"unchanged"}
    assert {t["current"] for t in again.json()["targets"]} == {"live"}

    # the file changed: a new record replaces the old one (LWW on the same key)
    changed = await seeded(srv, envoy, body(b"hello again\n", retention="pinned"))
    assert changed.status_code == 201
    (item,) = changed.json()["targets"]
    assert item["outcome"] == "published" and item["replaced"]["blob"] == blob(b"hello\n")["sha256"]
    motd = next(r for r in await records(srv) if r["target"] == "etc/motd")
    assert motd["blob"] == blob(b"hello again\n")["sha256"]

    # an operator's revoke stands: the unchanged sidecar does not bring the target back
    await srv.admin("POST", "/swarm/filecast/revoke", {"target": "etc/motd"})
    after = await seeded(srv, envoy, body(b"hello again\n", retention="pinned"))
    assert after.status_code == 200
    assert after.json()["targets"][0] | {"key": None} == {
        "target": "etc/motd",
        "key": None,
        "outcome": "unchanged",
        "current": "revoked",
    }
    assert [r["target"] for r in await records(srv) if r["live"]] == ["etc/issue"]

    # an operator's upload to a sidecar's target shows as an upload, and stands too
    await srv.distribute(b"by hand\n", "etc/issue")
    issue = next(r for r in await records(srv) if r["target"] == "etc/issue")
    assert issue["source"] == {"kind": "upload"}
    resp = await seeded(srv, envoy, body(targets=["etc/issue"], retention="pinned"))
    assert resp.status_code == 200 and resp.json()["targets"][0]["current"] == "replaced"

    status = await srv.admin("GET", "/swarm/filecast/status")
    assert [r["source"]["kind"] for r in status["records"]] == ["upload"]
