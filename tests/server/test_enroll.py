"""Enrollment against a real server lite: success, every refusal, races, re-enrollment."""

from __future__ import annotations

import json
import logging
import stat
import uuid
from pathlib import Path

import pytest
import trio
from cryptography import x509

from vigo_agent.enroll import EnrollError, Refused, enroll
from vigo_swarm import pki

from .conftest import Harness, error_code
from .test_pure import GARBAGE_TOKENS


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_enroll_success_files_and_certificate(srv: Harness) -> None:
    result = await srv.enroll("web01")
    paths = result.paths
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:vigo:envoy:{result.uuid}"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["web01"]
    assert san.get_values_for_type(x509.IPAddress) == []
    ident = pki.identity_from_cert(cert)
    assert ident.uuid == result.uuid and not ident.is_server
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(paths.ca.read_bytes()))
    assert pki.cert_fingerprint(paths.ca.read_bytes()) == srv.server.app.ca.fingerprint

    assert _mode(paths.key) == 0o600
    assert _mode(srv.server.paths.ca_key) == 0o600
    assert _mode(srv.server.paths.admin_token) == 0o600
    assert _mode(srv.server.paths.tls_key) == 0o600
    assert not list(paths.identity_dir.glob(".*pending*"))

    record = json.loads(paths.envoy_json.read_text())
    assert record["uuid"] == str(result.uuid) and record["hostname"] == "web01"
    assert record["server_url"] == srv.url
    assert record["authority_public_key"] == srv.server.app.ca.authority_public_hex
    assert record["checkin_interval_s"] == 7
    assert "enrolled_at" in record

    envoy = await srv.admin("GET", f"/envoys/{result.uuid}")
    assert envoy["state"] == "active" and envoy["serials"] == [record["certificate_serial"]]
    assert (await srv.admin("GET", "/envoys/WEB01"))["uuid"] == str(result.uuid)


async def test_already_enrolled_state_dir_needs_force(srv: Harness, tmp_path: Path) -> None:
    token = await srv.token(max_uses=3)
    first = await enroll(srv.url, token, tmp_path / "e", hostname="db1")
    with pytest.raises(EnrollError) as info:
        await enroll(srv.url, token, tmp_path / "e", hostname="db1")
    assert info.value.code == "already_enrolled"
    second = await enroll(srv.url, token, tmp_path / "e", hostname="db1", force=True)
    assert second.uuid != first.uuid


async def test_expired_token_is_refused(srv: Harness) -> None:
    token = await srv.token(ttl_s=1)
    srv.clock.advance(1.0)
    with pytest.raises(Refused) as info:
        await srv.enroll("late", token)
    assert info.value.code == "token_expired" and "expired" in info.value.message
    listed = (await srv.admin("GET", "/tokens"))["tokens"]
    assert [t["state"] for t in listed] == ["expired"]


async def test_over_used_token_is_refused(srv: Harness) -> None:
    token = await srv.token(max_uses=1)
    await srv.enroll("one", token)
    with pytest.raises(Refused) as info:
        await srv.enroll("two", token)
    assert info.value.code == "token_exhausted"
    assert "used 1 of 1" in info.value.message


async def test_concurrent_enrollments_race_for_the_last_uses(srv: Harness) -> None:
    token = await srv.token(max_uses=3)
    outcomes: list[str] = []

    async def one(i: int) -> None:
        try:
            await srv.enroll(f"racer{i}", token)
            outcomes.append("ok")
        except Refused as exc:
            outcomes.append(exc.code)

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(one, i)
    assert sorted(outcomes) == ["ok"] * 3 + ["token_exhausted"] * 7
    listed = (await srv.admin("GET", "/tokens"))["tokens"]
    assert (listed[0]["uses"], listed[0]["state"]) == (3, "exhausted")
    assert len((await srv.admin("GET", "/envoys"))["envoys"]) == 3


async def test_revoked_token_is_refused(srv: Harness) -> None:
    token = await srv.token(max_uses=5)
    token_id = token.split(".")[1]
    revoked = await srv.admin("DELETE", f"/tokens/{token_id}")
    assert revoked["state"] == "revoked"
    with pytest.raises(Refused) as info:
        await srv.enroll("nope", token)
    assert info.value.code == "token_revoked"


@pytest.mark.parametrize("garbage", GARBAGE_TOKENS[:8])
async def test_garbage_tokens_refused_by_server(srv: Harness, garbage: str) -> None:
    key = pki.generate_key()
    body = {"token": garbage, "csr": pki.make_csr(key, "g").decode(), "hostname": "g"}
    async with srv.client() as c:
        resp = await c.post("/api/v1/enroll", json=body)
    assert resp.status_code == 400 and error_code(resp) == "token_malformed"


@pytest.mark.parametrize("garbage", ["", "vigo1", "vigo1.zz.yy.xx", "eyJhbGciOi.x.y"])
async def test_garbage_tokens_refused_by_client_before_any_request(
    srv: Harness, garbage: str, tmp_path: Path
) -> None:
    with pytest.raises(EnrollError) as info:
        await enroll(srv.url, garbage, tmp_path / "g")
    assert info.value.code == "token_malformed"
    assert srv.server.app.stats.enroll_requests == 0
    assert not (tmp_path / "g").exists()


async def test_unknown_and_wrong_secret_tokens(srv: Harness) -> None:
    real = await srv.token()
    prefix, token_id, secret, fp = real.split(".")
    for forged in (f"{prefix}.deadbeef.{secret}.{fp}", f"{prefix}.{token_id}.{'A' * 32}.{fp}"):
        with pytest.raises(Refused) as info:
            await srv.enroll("forger", forged)
        assert info.value.code == "token_unknown"
    assert (await srv.admin("GET", "/tokens"))["tokens"][0]["uses"] == 0


@pytest.mark.parametrize("hostname", ["bad_host", "-x", "localhost", "127.0.0.1", "a" * 254])
async def test_bad_hostnames_are_refused(srv: Harness, hostname: str) -> None:
    token = await srv.token()
    with pytest.raises(Refused) as info:
        await enroll(srv.url, token, srv.tmp / "h", hostname=hostname)
    assert info.value.code == "bad_hostname"
    assert (await srv.admin("GET", "/tokens"))["tokens"][0]["uses"] == 0


async def test_bad_csr_is_refused_and_uses_nothing(srv: Harness) -> None:
    token = await srv.token()
    async with srv.client() as c:
        for csr in (
            "not a csr",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ):
            resp = await c.post(
                "/api/v1/enroll", json={"token": token, "csr": csr, "hostname": "x"}
            )
            assert resp.status_code == 400 and error_code(resp) == "bad_csr"
    assert (await srv.admin("GET", "/tokens"))["tokens"][0]["uses"] == 0


async def test_token_of_another_server_is_unknown(
    srv: Harness, nursery: trio.Nursery, tmp_path: Path
) -> None:
    from .conftest import start_server

    other = await start_server(nursery, tmp_path, "other")
    token = await other.token()
    async with srv.client() as c:
        resp = await c.post(
            "/api/v1/enroll",
            json={
                "token": token,
                "csr": pki.make_csr(pki.generate_key(), "x").decode(),
                "hostname": "x",
            },
        )
    assert resp.status_code == 403 and error_code(resp) == "token_unknown"


async def test_reenroll_revokes_previous_certificate(srv: Harness) -> None:
    token = await srv.token(max_uses=2)
    old = await srv.enroll("web01", token)
    new = await srv.enroll("web01", token)
    assert old.uuid != new.uuid
    resp = await srv.checkin(new)
    assert resp.status_code == 200, resp.text
    revoked = resp.json()["revoked"]
    assert format(old.certificate_serial, "x") in revoked["serials"]
    assert str(old.uuid) in revoked["uuids"]
    assert format(new.certificate_serial, "x") not in revoked["serials"]
    old_record = await srv.admin("GET", f"/envoys/{old.uuid}")
    assert (old_record["state"], old_record["replaced_by"]) == ("replaced", str(new.uuid))
    assert (await srv.admin("GET", "/envoys/web01"))["uuid"] == str(new.uuid)
    refused = await srv.checkin(old)
    assert refused.status_code == 403 and error_code(refused) == "revoked"


async def test_logs_never_hold_secrets(srv: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = await srv.token(max_uses=2)
    result = await srv.enroll("quiet", token)
    async with srv.client() as c:
        await c.get("/api/v1/tokens", headers={"authorization": "Bearer wrong"})
    text = caplog.text
    assert "enrolled quiet" in text
    secret = token.split(".")[2]
    assert secret not in text and token not in text
    assert srv.server.admin_token not in text
    key_body = result.paths.key.read_text().splitlines()[1]
    assert key_body not in text
    ca_key_body = srv.server.paths.ca_key.read_text().splitlines()[1]
    assert ca_key_body not in text


async def test_enroll_uuid_is_fresh_each_time(srv: Harness) -> None:
    token = await srv.token(max_uses=3)
    uuids = {(await srv.enroll(f"h{i}", token)).uuid for i in range(3)}
    assert len(uuids) == 3 and all(isinstance(u, uuid.UUID) for u in uuids)
