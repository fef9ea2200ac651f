"""Filecast, admin side: distribute, replace, revoke, refuse; the seed dir; restarts."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import trio

from vigo_swarm.blobstore import BlobInfo
from vigo_swarm.manifest import Record, from_wire, verify

from .conftest import Harness, error_code, start_server

CHUNK = 64 * 1024


def payload(n: int, seed: int = 1) -> bytes:
    out = b""
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{len(out)}".encode()).digest()
    return out[:n]


def key_of(target: str) -> str:
    return "filecast/" + hashlib.sha256(target.encode()).hexdigest()[:40]


def seed_names(srv: Harness) -> list[str]:
    return sorted(os.listdir(srv.seed_dir)) if srv.seed_dir.exists() else []


def verified(srv: Harness, wire: object) -> Record:
    record = from_wire(wire)
    verify(record, srv.authority_keys)  # raises unless the server's authority signed it
    return record


async def test_distribute_signs_a_record_and_seeds_the_blob(srv: Harness) -> None:
    data = payload(3 * CHUNK + 100)
    answer = await srv.distribute(data, "etc/motd", chunk_bytes=str(CHUNK))
    sha = hashlib.sha256(data).hexdigest()

    record = verified(srv, answer["record"])
    assert record.key == key_of("etc/motd") and record.targets == ("etc/motd",)
    assert (record.blob, record.size_bytes, record.chunk_bytes) == (sha, len(data), CHUNK)
    assert record.origin == "server" and not record.tombstone
    assert record.retention.kind.value == "until_revoked"
    assert answer["blob"] == {
        "sha256": sha,
        "size_bytes": len(data),
        "chunk_bytes": CHUNK,
        "chunks": 4,
    }
    assert answer["replaced"] is None

    blob, info = srv.seed_dir / sha, srv.seed_dir / f"{sha}.info.json"
    assert blob.read_bytes() == data and hashlib.sha256(blob.read_bytes()).hexdigest() == sha
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert stat.S_IMODE(info.stat().st_mode) == 0o444
    described = BlobInfo.from_json(info.read_bytes())
    assert described.sha256 == sha and described.num_chunks == 4
    assert described.chunks_digest == record.chunks_digest
    assert seed_names(srv) == sorted([sha, f"{sha}.info.json"])  # no temp file left

    listing = await srv.admin("GET", "/swarm/filecast")
    assert [(r["target"], r["blob"], r["chunks"], r["live"]) for r in listing["records"]] == [
        ("etc/motd", sha, 4, True)
    ]
    assert listing["revocations"] == [] and listing["max_upload_bytes"] == 256 << 20
    assert listing["manifest_version"] == answer["manifest_version"] != 0


async def test_distributing_to_a_target_again_replaces_its_record(srv: Harness) -> None:
    first = await srv.distribute(b"version one\n", "etc/motd")
    srv.clock.advance(-30)  # a clock that went back a little cannot make the new record lose
    second = await srv.distribute(b"version two\n", "etc/motd", retention="pinned")
    old, new = verified(srv, first["record"]), verified(srv, second["record"])
    assert new.key == old.key and new.hlc > old.hlc and new.blob != old.blob
    assert second["replaced"]["blob"] == old.blob
    assert new.retention.kind.value == "pinned"

    other = await srv.distribute(b"version one\n", "etc/issue")  # same bytes, other target
    assert verified(srv, other["record"]).key != new.key
    assert other["blob"]["sha256"] == old.blob

    listing = await srv.admin("GET", "/swarm/filecast")
    assert sorted((r["target"], r["blob"]) for r in listing["records"]) == sorted(
        [("etc/issue", old.blob), ("etc/motd", new.blob)]
    )
    # the old blob stays in the seed dir (unreferenced by etc/motd, still by etc/issue)
    assert (srv.seed_dir / old.blob).exists() and (srv.seed_dir / new.blob).exists()


async def test_revoke_signs_a_tombstone(srv: Harness) -> None:
    added = await srv.distribute(b"secret-ish\n", "etc/app/config.ini")
    revoked = await srv.admin("POST", "/swarm/filecast/revoke", {"target": "etc/app/config.ini"})
    tomb = verified(srv, revoked["record"])
    add = verified(srv, added["record"])
    assert tomb.tombstone and tomb.key == add.key and tomb.hlc > add.hlc
    assert revoked["revoked"]["blob"] == add.blob
    assert revoked["manifest_version"] != added["manifest_version"]

    listing = await srv.admin("GET", "/swarm/filecast")
    assert listing["records"] == []
    assert [(r["target"], r["key"]) for r in listing["revocations"]] == [
        ("etc/app/config.ini", add.key)
    ]

    async with srv.client() as c:
        for target in ("etc/app/config.ini", "never/distributed"):
            again = await c.post(
                "/api/v1/swarm/filecast/revoke", json={"target": target}, headers=srv.admin_headers
            )
            assert again.status_code == 404 and error_code(again) == "filecast_not_found"
        for body in ({"target": "../x"}, {}, {"target": 7}, {"target": "a", "x": 1}, [1]):
            bad = await c.post(
                "/api/v1/swarm/filecast/revoke", json=body, headers=srv.admin_headers
            )
            assert bad.status_code == 400, body

    # distributing again after a revocation brings the target back, newer than the tombstone
    back = verified(srv, (await srv.distribute(b"v2\n", "etc/app/config.ini"))["record"])
    assert back.key == tomb.key and back.hlc > tomb.hlc


BAD_TARGETS = [
    ("../etc/passwd", "'..'"),
    ("etc/../../passwd", "'..'"),
    ("/etc/motd", "absolute"),
    ("etc/mo\x00td", "NUL"),
    ("etc\\motd", "backslash"),
    ("a/" * 600 + "b", "bytes"),
    ("x" * 300, "255 bytes"),
    ("etc//motd", "empty"),
    ("etc/motd/", "empty"),
    ("./motd", "'.'"),
    ("etc/mo\ntd", "control"),
    ("", "required"),  # parse_qsl drops an empty value: the parameter is missing
]


@pytest.mark.parametrize(("target", "why"), BAD_TARGETS)
async def test_bad_targets_are_refused_and_write_nothing(
    srv: Harness, target: str, why: str
) -> None:
    resp = await srv.upload(b"payload", target)
    assert resp.status_code == 400 and error_code(resp) == "bad_target", resp.text
    assert why in resp.json()["error"]["message"]
    assert seed_names(srv) == []
    assert (await srv.admin("GET", "/swarm/filecast"))["records"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"retention": "forever"}, "bad_retention"),
        ({"retention": "expires_at:soon"}, "bad_retention"),
        ({"retention": "expires_at:1000"}, "bad_retention"),  # in the past
        ({"retention": "expires_at:99999999999999"}, "bad_retention"),  # beyond 9999
        ({"chunk_bytes": "1000"}, "bad_chunk_bytes"),
        ({"chunk_bytes": "100000"}, "bad_chunk_bytes"),  # not a power of two
        ({"chunk_bytes": str(32 << 20)}, "bad_chunk_bytes"),
        ({"chunk_bytes": "-65536"}, "bad_chunk_bytes"),
        ({"chunk": "65536"}, "bad_request"),  # a typo is refused, not ignored
    ],
)
async def test_bad_parameters_are_refused_and_write_nothing(
    srv: Harness, params: dict[str, str], code: str
) -> None:
    resp = await srv.upload(b"payload", "etc/motd", **params)
    assert resp.status_code == 400 and error_code(resp) == code, resp.text
    assert seed_names(srv) == []


async def test_expiring_retention_and_wrong_content_type(srv: Harness) -> None:
    when = int(srv.clock.now) + 3600
    answer = await srv.distribute(b"x", "tmp/x", retention=f"expires_at:{when}")
    assert answer["record"]["retention"] == {"kind": "expires_at", "expires_at_unix": float(when)}
    async with srv.client() as c:
        resp = await c.post(
            "/api/v1/swarm/filecast",
            params={"target": "tmp/y"},
            json={"file": "x"},
            headers=srv.admin_headers,
        )
    assert resp.status_code == 415 and error_code(resp) == "unsupported_media_type"
    srv.clock.advance(7200)  # past expiry: listed, but no longer live
    listing = await srv.admin("GET", "/swarm/filecast")
    assert [(r["target"], r["live"]) for r in listing["records"]] == [("tmp/x", False)]


async def test_same_bytes_with_another_chunk_size_is_a_conflict(srv: Harness) -> None:
    data = payload(200_000)
    await srv.distribute(data, "a", chunk_bytes=str(CHUNK))
    resp = await srv.upload(data, "b", chunk_bytes=str(2 * CHUNK))
    assert resp.status_code == 409 and error_code(resp) == "chunking_conflict"
    # without chunk_bytes the existing chunking is reused
    assert (await srv.distribute(data, "b"))["blob"]["chunk_bytes"] == CHUNK


async def test_upload_size_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    limit = 128 * 1024
    srv = await start_server(nursery, tmp_path, filecast_max_upload_bytes=limit)
    over = await srv.upload(payload(limit + 1), "big")
    assert over.status_code == 413 and error_code(over) == "too_large"
    assert seed_names(srv) == []
    assert (await srv.admin("GET", "/swarm/filecast"))["max_upload_bytes"] == limit
    exactly = await srv.distribute(payload(limit), "big")
    assert exactly["blob"]["size_bytes"] == limit


async def test_empty_file_is_a_blob_too(srv: Harness) -> None:
    answer = await srv.distribute(b"", "etc/flag")
    assert answer["blob"] == {
        "sha256": hashlib.sha256(b"").hexdigest(),
        "size_bytes": 0,
        "chunk_bytes": 256 * 1024,  # the default for small files
        "chunks": 0,
    }
    verified(srv, answer["record"])


async def test_records_and_clock_survive_a_restart(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        first = await start_server(nursery, tmp_path, "keep")
        old = verified(first, (await first.distribute(b"one", "etc/motd"))["record"])
        (first.seed_dir / ".upload-deadbeef").write_bytes(b"half an upload")  # a crash
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        again = await start_server(nursery, tmp_path, "keep")
        again.clock.advance(-30)  # the wall clock went back a little meanwhile
        listing = await again.admin("GET", "/swarm/filecast")
        assert [r["blob"] for r in listing["records"]] == [old.blob]
        assert ".upload-deadbeef" not in seed_names(again)
        new = verified(again, (await again.distribute(b"two", "etc/motd"))["record"])
        assert new.hlc > old.hlc
        manifest = again.server.paths.manifest_db
        assert manifest.exists() and stat.S_IMODE(manifest.parent.stat().st_mode) == 0o700
        nursery.cancel_scope.cancel()


async def test_a_server_clock_far_behind_its_records_refuses_to_sign(srv: Harness) -> None:
    await srv.distribute(b"one", "etc/motd")
    before = await srv.admin("GET", "/swarm/filecast")
    srv.clock.advance(-3600)  # envoys would refuse a record stamped an hour ahead
    resp = await srv.upload(b"two", "etc/motd")
    assert resp.status_code == 503 and error_code(resp) == "clock_behind"
    assert "behind" in resp.json()["error"]["message"]
    assert hashlib.sha256(b"two").hexdigest() not in seed_names(srv)  # refused before seeding
    async with srv.client() as c:
        revoke = await c.post(
            "/api/v1/swarm/filecast/revoke", json={"target": "etc/motd"}, headers=srv.admin_headers
        )
    assert revoke.status_code == 503
    srv.clock.advance(3600)
    after = await srv.admin("GET", "/swarm/filecast")
    assert after["records"] == before["records"]
    assert after["manifest_version"] == before["manifest_version"]


async def test_openapi_documents_the_check_in_additions(srv: Harness) -> None:
    async with srv.client() as c:
        doc = (await c.get("/api/v1/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "filecast" in schemas["CheckinRequest"]["properties"]
    assert "manifest_version" in schemas["Checkin"]["properties"]
    assert schemas["FilecastProgressList"]["maxItems"] == 1000
    json.dumps(doc)  # serializable as served
