"""Check-in: identity from the certificate only, peer hints, the revocation list."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from vigo_server_lite.ca import FleetCA
from vigo_swarm import pki

from .conftest import Harness, error_code


async def test_checkin_records_and_returns_peers(srv: Harness) -> None:
    token = await srv.token(max_uses=3)
    a = await srv.enroll("alpha", token)
    b = await srv.enroll("beta", token)
    c = await srv.enroll("gamma", token)  # never checks in: not a hint

    first = await srv.checkin(
        a,
        {
            "addresses": ["10.0.0.1", "fd00::1"],
            "port": 1531,
            "manifest_version": 3,
            "hostname": "liar",
        },
    )
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["peers"] == []  # nobody else has checked in; never itself
    assert answer["checkin_interval_s"] == 7
    assert answer["server_time"] == srv.clock.now
    assert answer["revoked"] == {"serials": [], "uuids": []}

    srv.clock.advance(3)
    second = (await srv.checkin(b, {"addresses": ["10.0.0.2"], "port": 1600})).json()
    assert second["peers"] == [
        {
            "uuid": str(a.uuid),
            "hostname": "alpha",
            "addresses": ["10.0.0.1", "fd00::1"],
            "port": 1531,
        }
    ]
    again = (await srv.checkin(a)).json()
    assert [p["uuid"] for p in again["peers"]] == [str(b.uuid)]
    assert str(c.uuid) not in str(again)

    record = await srv.admin("GET", f"/envoys/{a.uuid}")
    assert record["hostname"] == "alpha" and record["reported_hostname"] is None
    assert record["addresses"] == ["10.0.0.1"] and record["last_checkin"] == srv.clock.now
    listed = {e["hostname"]: e for e in (await srv.admin("GET", "/envoys"))["envoys"]}
    assert listed["beta"]["port"] == 1600 and listed["gamma"]["last_checkin"] is None


async def test_checkin_without_client_certificate_is_403(srv: Harness) -> None:
    async with srv.client() as c:
        resp = await c.post("/api/v1/checkin", json={"addresses": [], "port": 1531})
    assert resp.status_code == 403 and error_code(resp) == "not_enrolled"


async def test_checkin_with_certificate_from_another_ca_fails_at_tls(
    srv: Harness, tmp_path: Path
) -> None:
    rogue = FleetCA.load_or_create(tmp_path / "rogue-ca")
    key = pki.generate_key()
    victim = await srv.enroll("victim")  # a real UUID the rogue tries to claim
    issued = rogue.issue_envoy(pki.make_csr(key, "victim"), victim.uuid, "victim")
    pki.write_public_file(tmp_path / "rogue.pem", issued.pem)
    pki.write_secret_file(tmp_path / "rogue.key", pki.key_to_pem(key))
    ctx = pki.client_context(
        srv.ca_file,
        cert_file=tmp_path / "rogue.pem",
        key_file=tmp_path / "rogue.key",
        check_hostname=True,
    )
    failures_before = srv.server.https.stats.handshake_failures if srv.server.https else 0
    async with httpx.AsyncClient(base_url=srv.url, verify=ctx, trust_env=False) as c:
        with pytest.raises(httpx.TransportError):
            await c.post("/api/v1/checkin", json={"addresses": [], "port": 1531})
    assert srv.server.https is not None
    assert srv.server.https.stats.handshake_failures > failures_before
    assert (await srv.admin("GET", f"/envoys/{victim.uuid}"))["last_checkin"] is None


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"",
        b"[]",
        b'{"port": 0}',
        b'{"port": "1531"}',
        b'{"port": 1531, "addresses": ["300.1.1.1"]}',
        b'{"port": 1531, "addresses": "10.0.0.9"}',
        b'{"port": 1531, "uuid": "00000000-0000-0000-0000-000000000000"}',
        b'{"port": 1531, "addresses": [' + b",".join([b'"10.0.0.9"'] * 33) + b"]}",
    ],
)
async def test_garbage_checkin_is_400_and_changes_nothing(srv: Harness, body: bytes) -> None:
    envoy = await srv.enroll("steady")
    assert (await srv.checkin(envoy)).status_code == 200
    before = await srv.admin("GET", f"/envoys/{envoy.uuid}")
    srv.clock.advance(5)
    resp = await srv.checkin(envoy, body)
    assert resp.status_code == 400, resp.text
    assert await srv.admin("GET", f"/envoys/{envoy.uuid}") == before


async def test_revoked_envoy_is_on_the_list_and_refused(srv: Harness) -> None:
    token = await srv.token(max_uses=2)
    bad = await srv.enroll("bad", token)
    good = await srv.enroll("good", token)
    assert (await srv.checkin(bad)).status_code == 200
    revoked = await srv.admin("POST", f"/envoys/{bad.uuid}/revoke")
    serial = format(bad.certificate_serial, "x")
    assert revoked["state"] == "revoked" and revoked["revoked_serials"] == [serial]

    answer = (await srv.checkin(good)).json()
    assert answer["revoked"] == {"serials": [serial], "uuids": [str(bad.uuid)]}
    assert answer["peers"] == []  # a revoked envoy is no longer a hint
    refused = await srv.checkin(bad)
    assert refused.status_code == 403 and error_code(refused) == "revoked"
    # revoking twice is harmless and keeps the record
    assert (await srv.admin("POST", f"/envoys/{bad.uuid}/revoke"))["state"] == "revoked"


async def test_many_checkins_concurrently(srv: Harness) -> None:
    token = await srv.token(max_uses=6)
    envoys = [await srv.enroll(f"n{i}", token) for i in range(6)]
    codes: list[int] = []

    async def one(i: int) -> None:
        resp = await srv.checkin(envoys[i], {"addresses": [f"10.1.0.{i + 1}"], "port": 1531})
        codes.append(resp.status_code)

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(one, i)
    assert codes == [200] * 6
    final = (await srv.checkin(envoys[0])).json()
    assert sorted(p["hostname"] for p in final["peers"]) == ["n1", "n2", "n3", "n4", "n5"]
