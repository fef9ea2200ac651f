"""Filecast, envoy side: manifest sync, the seed endpoints, check-in progress, status."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import trio

from vigo_agent.enroll import EnrollResult
from vigo_swarm.blobstore import BlobInfo
from vigo_swarm.manifest import from_wire, summary_to_wire, verify

from .conftest import Harness, error_code
from .test_filecast import CHUNK, payload

SYNC = "/api/v1/swarm/manifest/sync"


async def sync(srv: Harness, envoy: EnrollResult, summary: dict[str, Any]) -> Any:
    async with srv.envoy_client(envoy.paths) as c:
        resp = await c.post(SYNC, json={"summary": summary})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_manifest_sync_sends_exactly_what_the_envoy_lacks(srv: Harness) -> None:
    envoy = await srv.enroll("web01")
    a = from_wire((await srv.distribute(b"a", "etc/a"))["record"])
    b = from_wire((await srv.distribute(b"b", "etc/b"))["record"])
    c = from_wire((await srv.distribute(b"c", "etc/c"))["record"])

    everything = await sync(srv, envoy, {})
    assert everything["want"] == []
    got = [from_wire(r) for r in everything["records"]]
    assert sorted(r.key for r in got) == sorted([a.key, b.key, c.key])
    for record in got:
        verify(record, srv.authority_keys)

    held = summary_to_wire({a.key: (a.hlc, a.origin), b.key: (b.hlc - 1, b.origin)})
    held["filecast/" + "0" * 40] = [a.hlc + 5, "server"]  # something the server lacks
    partial = await sync(srv, envoy, held)
    assert sorted(r["key"] for r in partial["records"]) == sorted([b.key, c.key])
    assert partial["want"] == []  # never: the server takes no records from envoys

    up_to_date = summary_to_wire({r.key: (r.hlc, r.origin) for r in (a, b, c)})
    assert await sync(srv, envoy, up_to_date) == {"records": [], "want": []}

    await srv.admin("POST", "/swarm/filecast/revoke", {"target": "etc/a"})
    after = await sync(srv, envoy, up_to_date)
    assert [(r["key"], r["tombstone"]) for r in after["records"]] == [(a.key, True)]


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b"nope",
        b'{"summary": []}',
        b'{"summary": {"BAD KEY": [1, "s"]}}',
        b'{"summary": {}, "records": []}',
        b'{"summary": {"filecast/x": [0, "server"]}}',
    ],
)
async def test_manifest_sync_refuses_bad_bodies(srv: Harness, body: bytes) -> None:
    envoy = await srv.enroll("web01")
    async with srv.envoy_client(envoy.paths) as c:
        resp = await c.post(SYNC, content=body)
    assert resp.status_code == 400, resp.text


async def test_envoy_endpoints_need_an_active_envoy_certificate(srv: Harness) -> None:
    data = payload(2 * CHUNK)
    sha = (await srv.distribute(data, "etc/x", chunk_bytes=str(CHUNK)))["blob"]["sha256"]
    paths = [f"/api/v1/swarm/seed/{sha}/info", f"/api/v1/swarm/seed/{sha}/chunks/0"]
    async with srv.client() as c:  # no client certificate; the admin token does not help
        for path in paths:
            resp = await c.get(path, headers=srv.admin_headers)
            assert resp.status_code == 403 and error_code(resp) == "not_enrolled"
        resp = await c.post(SYNC, json={"summary": {}}, headers=srv.admin_headers)
        assert resp.status_code == 403 and error_code(resp) == "not_enrolled"

    token = await srv.token(max_uses=2)
    bad, good = await srv.enroll("bad", token), await srv.enroll("good", token)
    assert (await sync(srv, bad, {}))["records"]  # admitted (and cached) while active
    await srv.admin("POST", f"/envoys/{bad.uuid}/revoke")
    async with srv.envoy_client(bad.paths) as c:
        for path in paths:
            resp = await c.get(path)
            assert resp.status_code == 403 and error_code(resp) == "revoked"
        resp = await c.post(SYNC, json={"summary": {}})
        assert resp.status_code == 403 and error_code(resp) == "revoked"
    assert (await sync(srv, good, {}))["records"]

    replaced = await srv.enroll("good")  # the hostname enrolls again: the old cert is out
    async with srv.envoy_client(good.paths) as c:
        assert (await c.post(SYNC, json={"summary": {}})).status_code == 403
    assert (await sync(srv, replaced, {}))["records"]


async def test_seed_serves_verified_chunks(srv: Harness) -> None:
    envoy = await srv.enroll("web01")
    data = payload(3 * CHUNK + 7)
    sha = (await srv.distribute(data, "opt/tool", chunk_bytes=str(CHUNK)))["blob"]["sha256"]
    async with srv.envoy_client(envoy.paths) as c:
        resp = await c.get(f"/api/v1/swarm/seed/{sha}/info")
        assert resp.status_code == 200
        assert resp.content == (srv.seed_dir / f"{sha}.info.json").read_bytes()
        info = BlobInfo.from_json(resp.content)
        assert info.num_chunks == 4
        chunks = []
        for index in range(info.num_chunks):
            chunk = await c.get(f"/api/v1/swarm/seed/{sha}/chunks/{index}")
            assert chunk.status_code == 200
            assert chunk.headers["content-type"] == "application/octet-stream"
            assert hashlib.sha256(chunk.content).digest() == info.chunk_hashes[index]
            chunks.append(chunk.content)
        assert b"".join(chunks) == data

        for bad in ("A" * 64, "a" * 63, "a" * 65, "g" * 64, sha.upper(), "%2e%2e", "a%2fb"):
            for path in (f"/api/v1/swarm/seed/{bad}/info", f"/api/v1/swarm/seed/{bad}/chunks/0"):
                resp = await c.get(path)
                assert resp.status_code == 400 and error_code(resp) == "bad_hash", (bad, path)
        for index in ("-1", "01", "x", "1.0", "99999999999"):
            resp = await c.get(f"/api/v1/swarm/seed/{sha}/chunks/{index}")
            assert resp.status_code == 400 and error_code(resp) == "bad_index", index
        resp = await c.get(f"/api/v1/swarm/seed/{sha}/chunks/4")
        assert resp.status_code == 404 and error_code(resp) == "chunk_not_found"
        unknown = "0" * 64
        for path in (
            f"/api/v1/swarm/seed/{unknown}/info",
            f"/api/v1/swarm/seed/{unknown}/chunks/0",
        ):
            resp = await c.get(path)
            assert resp.status_code == 404 and error_code(resp) == "blob_not_found"

        # a corrupted seed is caught per chunk and not served
        blob = srv.seed_dir / sha
        os.chmod(blob, 0o644)
        with open(blob, "r+b") as f:
            f.seek(CHUNK + 1)
            f.write(b"\xff")
        resp = await c.get(f"/api/v1/swarm/seed/{sha}/chunks/1")
        assert resp.status_code == 500 and error_code(resp) == "seed_corrupt"
        assert (await c.get(f"/api/v1/swarm/seed/{sha}/chunks/0")).status_code == 200
        assert srv.server.app.filecast_stats.corrupt_chunks == 1

        # revoked content is no longer served
        await srv.admin("POST", "/swarm/filecast/revoke", {"target": "opt/tool"})
        resp = await c.get(f"/api/v1/swarm/seed/{sha}/chunks/0")
        assert resp.status_code == 404 and error_code(resp) == "blob_not_found"


def progress(blob: str, have: int, total: int, state: str, **extra: Any) -> dict[str, Any]:
    return {"blob": blob, "have_chunks": have, "total_chunks": total, "state": state, **extra}


def checkin_body(items: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"addresses": ["10.0.0.1"], "port": 1531, **extra}
    if items is not None:
        body["filecast"] = items
    return body


async def status(srv: Harness) -> Any:
    return await srv.admin("GET", "/swarm/filecast/status")


def states(view: Any) -> dict[str, str]:
    (record,) = view["records"]
    return {e["hostname"]: e["state"] for e in record["envoys"]}


async def test_checkin_progress_shows_in_status(srv: Harness) -> None:
    token = await srv.token(max_uses=3)
    a, b, c = [await srv.enroll(name, token) for name in ("alpha", "beta", "gamma")]
    added = await srv.distribute(payload(4 * CHUNK), "etc/big", chunk_bytes=str(CHUNK))
    sha = added["blob"]["sha256"]

    view = await status(srv)
    assert states(view) == {"alpha": "unknown", "beta": "unknown", "gamma": "unknown"}
    assert view["totals"]["done"] is False and view["totals"]["counts"]["unknown"] == 3

    answer = await srv.checkin(a, checkin_body([progress(sha, 4, 4, "materialized")]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["manifest_version"] == added["manifest_version"]
    other = "1" * 64
    reported = [
        progress(sha, 2, 4, "partial", error="peer 10.0.0.9 sent a bad chunk"),
        progress(other, 0, 9, "missing"),
    ]
    assert (await srv.checkin(b, checkin_body(reported))).status_code == 200

    view = await status(srv)
    (record,) = view["records"]
    rows = {e["hostname"]: e for e in record["envoys"]}
    assert (rows["alpha"]["state"], rows["alpha"]["have_chunks"]) == ("materialized", 4)
    assert rows["beta"]["state"] == "partial" and rows["beta"]["have_chunks"] == 2
    assert rows["beta"]["error"] == "peer 10.0.0.9 sent a bad chunk"
    assert rows["beta"]["reported_at"] == srv.clock.now
    assert rows["gamma"]["state"] == "unknown" and rows["gamma"]["last_checkin"] is None
    assert record["counts"] == {
        "unknown": 1,
        "missing": 0,
        "partial": 1,
        "complete": 0,
        "materialized": 1,
        "error": 0,
    }
    assert view["totals"] == {
        "records": 1,
        "envoys": 3,
        "pairs": 3,
        "counts": record["counts"],
        "done": False,
    }

    # a check-in without the field keeps the last report; an empty list clears it
    assert (await srv.checkin(b, checkin_body())).status_code == 200
    assert states(await status(srv))["beta"] == "partial"
    assert (await srv.checkin(b, checkin_body([]))).status_code == 200
    assert states(await status(srv))["beta"] == "unknown"

    for envoy in (b, c):
        body = checkin_body([progress(sha, 4, 4, "materialized")])
        assert (await srv.checkin(envoy, body)).status_code == 200
    done = await status(srv)
    assert done["totals"]["done"] is True and done["records"][0]["done"] is True

    # a revoked envoy drops out of the view; a revoked record too
    await srv.admin("POST", f"/envoys/{c.uuid}/revoke")
    assert set(states(await status(srv))) == {"alpha", "beta"}
    await srv.admin("POST", "/swarm/filecast/revoke", {"target": "etc/big"})
    assert (await status(srv))["records"] == []


BAD_PROGRESS = [
    "not a list",
    [1],
    [{"blob": "a" * 64}],
    [progress("A" * 64, 0, 1, "missing")],
    [progress("a" * 63, 0, 1, "missing")],
    [progress("a" * 64, 0, 1, "downloading")],
    [progress("a" * 64, 2, 1, "partial")],
    [progress("a" * 64, -1, 1, "partial")],
    [progress("a" * 64, True, 1, "partial")],
    [progress("a" * 64, 0, "1", "partial")],
    [progress("a" * 64, 0, 2**40, "partial")],
    [progress("a" * 64, 1, 2, "complete")],
    [progress("a" * 64, 1, 2, "missing")],
    [progress("a" * 64, 0, 1, "error", error="x" * 501)],
    [progress("a" * 64, 0, 1, "error", error="line\nbreak")],
    [progress("a" * 64, 0, 1, "error", error=7)],
    [progress("a" * 64, 0, 1, "missing", extra=1)],
    [progress("a" * 64, 0, 1, "missing"), progress("a" * 64, 0, 1, "missing")],
    [progress(f"{i:064x}", 0, 1, "missing") for i in range(1001)],
    None,
]


@pytest.mark.parametrize("items", BAD_PROGRESS)
async def test_malformed_progress_is_400_and_stores_nothing(srv: Harness, items: Any) -> None:
    envoy = await srv.enroll("web01")
    sha = (await srv.distribute(b"x", "etc/x"))["blob"]["sha256"]
    assert (await srv.checkin(envoy, checkin_body([progress(sha, 0, 1, "missing")]))).is_success
    before_status = await status(srv)
    before_envoy = await srv.admin("GET", f"/envoys/{envoy.uuid}")
    srv.clock.advance(5)
    body = {"addresses": ["10.0.0.2"], "port": 1600, "filecast": items}
    resp = await srv.checkin(envoy, body)
    assert resp.status_code == 400 and error_code(resp) == "bad_progress", resp.text
    assert await status(srv) == {**before_status, "server_time": srv.clock.now}
    assert await srv.admin("GET", f"/envoys/{envoy.uuid}") == before_envoy


async def test_a_full_progress_report_fits_the_checkin_body(srv: Harness) -> None:
    envoy = await srv.enroll("web01")
    items = [progress(f"{i:064x}", 0, 3, "error", error="e" * 100) for i in range(1000)]
    assert (await srv.checkin(envoy, checkin_body(items))).status_code == 200


WATCH = "/api/v1/swarm/manifest/watch"


async def test_manifest_watch_answers_when_the_server_signs_something(srv: Harness) -> None:
    envoy = await srv.enroll("web01")
    async with srv.envoy_client(envoy.paths) as c:
        first = await c.get(WATCH, params={"version": "", "wait": "30"})  # unknown: at once
        assert first.status_code == 200, first.text
        version = first.json()["version"]
        for bad in ({"wait": "-1"}, {"wait": "51"}, {"wait": "soon"}, {"version": "9" * 30}):
            resp = await c.get(WATCH, params={"version": str(version), **bad})
            assert resp.status_code == 400 and error_code(resp) == "bad_watch", bad
        answer: list[Any] = []

        async def watch() -> None:
            resp = await c.get(WATCH, params={"version": str(version), "wait": "30"}, timeout=40)
            answer.append(resp.json())

        with trio.fail_after(20):  # well under the 30 s the server may hold it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                while srv.server.app.manifest_watchers == 0:  # until it is held
                    await trio.sleep(0.01)
                await srv.distribute(b"news", "etc/news")
        assert answer and answer[0]["version"] != version
    async with srv.client() as anonymous:
        assert (await anonymous.get(WATCH)).status_code in (401, 403)
