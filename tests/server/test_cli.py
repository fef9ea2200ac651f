"""The real console scripts as subprocesses: `vigo enroll`, `vigocli`, `vigo-server-lite`."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509

from vigo_agent.enroll import TrustError, enroll
from vigo_swarm import pki

from .conftest import BIN, Harness, load_json, run_cli, start_server


async def test_vigo_enroll_refuses_a_server_with_another_ca(
    srv: Harness, nursery: trio.Nursery, tmp_path: Path
) -> None:
    token = await srv.token()
    impostor = await start_server(nursery, tmp_path, "impostor")
    state = tmp_path / "victim-state"
    done = await run_cli(
        "vigo",
        "enroll",
        "--server",
        impostor.url,
        "--token",
        token,
        "--state-dir",
        str(state),
        "--hostname",
        "victim",
    )
    assert done.returncode == 5, done.stderr
    err = done.stderr.decode()
    assert "not the one this join token was made for" in err and "Traceback" not in err
    # the impostor saw exactly one request, GET /api/v1/ca, and never a POST to /enroll
    assert impostor.server.app.stats.enroll_requests == 0
    assert impostor.server.https is not None and impostor.server.https.stats.requests == 1
    assert not (state / "identity" / "key.pem").exists()
    # the library says the same, as a TrustError
    with pytest.raises(TrustError):
        await enroll(impostor.url, token, state, hostname="victim")
    assert impostor.server.app.stats.enroll_requests == 0
    # and the token is still unused on the real server
    assert (await srv.admin("GET", "/tokens"))["tokens"][0]["uses"] == 0


async def test_vigo_enroll_exit_codes(srv: Harness, tmp_path: Path) -> None:
    token = await srv.token()
    ok = await run_cli(
        "vigo",
        "enroll",
        "--server",
        srv.url,
        "--token",
        token,
        "--state-dir",
        str(tmp_path / "a"),
        "--hostname",
        "cli01",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    result = load_json(ok.stdout)
    assert result["hostname"] == "cli01"
    assert (await srv.admin("GET", "/envoys/cli01"))["uuid"] == result["uuid"]

    human = await run_cli(
        "vigo",
        "enroll",
        "--server",
        srv.url,
        "--token",
        token,
        "--state-dir",
        str(tmp_path / "b"),
        "--hostname",
        "cli02",
    )
    assert human.returncode == 4
    assert b"token_exhausted" in human.stderr and b"Traceback" not in human.stderr

    for bad, code in (("garbage", 2), (token, 3)):
        server = srv.url if bad == "garbage" else "https://127.0.0.1:1"
        done = await run_cli(
            "vigo", "enroll", "--server", server, "--token", bad, "--state-dir", str(tmp_path / "c")
        )
        assert done.returncode == code, done.stderr
        assert b"Traceback" not in done.stderr


def _admin_env(srv: Harness) -> dict[str, str]:
    token_file = str(srv.server.paths.admin_token)
    return {
        "VIGO_SERVER": srv.url,
        "VIGO_ADMIN_TOKEN_FILE": token_file,
        "VIGO_CA_FILE": str(srv.ca_file),
        "VIGOCLI_CONFIG": "/nonexistent/vigocli.yaml",
    }


async def test_vigocli_end_to_end(srv: Harness, tmp_path: Path) -> None:
    env = _admin_env(srv)
    created = await run_cli(
        "vigocli",
        "token",
        "create",
        "--max-uses",
        "2",
        "--ttl-s",
        "600",
        "--description",
        "e2e",
        "--json",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    token = load_json(created.stdout)
    assert token["token"].startswith(f"vigo1.{token['id']}.") and token["uses"] == 0

    plain = await run_cli("vigocli", "token", "create", env=env)
    assert plain.returncode == 0 and plain.stdout.decode().startswith("vigo1.")

    listed = load_json((await run_cli("vigocli", "token", "list", "--json", env=env)).stdout)
    assert sorted(t["description"] for t in listed) == ["", "e2e"]
    assert token["token"].split(".")[2] not in json.dumps(listed)

    envoy = await srv.enroll("e2e-host", token["token"])
    envoys = await run_cli("vigocli", "envoys", "list", "--json", env=env)
    assert envoys.returncode == 0
    assert [(e["hostname"], e["state"]) for e in load_json(envoys.stdout)] == [
        ("e2e-host", "active")
    ]
    table = await run_cli("vigocli", "envoys", "list", env=env)
    assert b"e2e-host" in table.stdout and b"UUID" in table.stdout

    shown = await run_cli("vigocli", "envoys", "show", "e2e-host", "--json", env=env)
    assert load_json(shown.stdout)["uuid"] == str(envoy.uuid)
    revoked = await run_cli("vigocli", "envoys", "revoke", str(envoy.uuid), "--json", env=env)
    assert load_json(revoked.stdout)["state"] == "revoked"
    gone = await run_cli("vigocli", "token", "revoke", token["id"], env=env)
    assert gone.returncode == 0 and token["id"].encode() in gone.stdout

    missing = await run_cli("vigocli", "envoys", "show", "ghost", env=env)
    assert missing.returncode == 1 and b"envoy_not_found" in missing.stderr


async def test_vigocli_bad_admin_token_and_bad_settings(srv: Harness, tmp_path: Path) -> None:
    env = _admin_env(srv)
    bad = await run_cli("vigocli", "--admin-token", "wrong", "envoys", "list", env=env)
    assert bad.returncode == 4
    err = bad.stderr.decode()
    assert "refused the admin token" in err and "Traceback" not in err
    assert bad.stdout == b""

    after_verb = await run_cli("vigocli", "token", "list", "--admin-token", "wrong", env=env)
    assert after_verb.returncode == 4

    no_ca = {k: v for k, v in env.items() if k != "VIGO_CA_FILE"}
    untrusted = await run_cli("vigocli", "token", "list", env=no_ca)
    assert untrusted.returncode == 5 and b"--ca-file" in untrusted.stderr

    unreachable = await run_cli(
        "vigocli", "--server", "https://127.0.0.1:1", "token", "list", env=env
    )
    assert unreachable.returncode == 3 and b"Traceback" not in unreachable.stderr

    config = tmp_path / "vigocli.yaml"
    config.write_text(
        f"server: {srv.url}\nadmin_token_file: {srv.server.paths.admin_token}\n"
        f"ca_file: {srv.ca_file}\n"
    )
    from_file = await run_cli("vigocli", "--config", str(config), "token", "list", "--json")
    assert from_file.returncode == 0 and load_json(from_file.stdout) == []

    config.write_text(f"server: {srv.url}\nadmin_tokn_file: x\n")
    strict = await run_cli("vigocli", "--config", str(config), "token", "list")
    assert strict.returncode == 2 and b"unknown key 'admin_tokn_file'" in strict.stderr
    nothing = await run_cli(
        "vigocli", "token", "list", env={"VIGOCLI_CONFIG": "/nonexistent/vigocli.yaml"}
    )
    assert nothing.returncode == 2 and b"no server given" in nothing.stderr


async def test_server_subprocess_first_start_and_sigterm(tmp_path: Path) -> None:
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    cmd = [
        str(BIN / "vigo-server-lite"),
        "serve",
        "--data-dir",
        str(data),
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        str(ready),
        "--advertise",
        "vigo.test",
    ]
    proc = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    log = b""
    try:
        with trio.fail_after(60):  # a guard, not a timing assertion
            while b"server lite ready" not in log:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, log.decode()
                log += chunk
        info = json.loads(ready.read_text())
        ctx = pki.client_context(Path(info["ca_file"]), check_hostname=True)
        async with httpx.AsyncClient(verify=ctx, trust_env=False) as c:
            health = await c.get(f"{info['url']}/api/v1/health")
        assert health.json()["status"] == "ok"
        assert info["admin_token_file"] == str(data / "admin.token")
        token = (data / "admin.token").read_text().strip()
        for path in (
            data / "ca" / "ca.key",
            data / "admin.token",
            data / "tls" / "server.key",
            data / "server.db",
        ):
            assert path.stat().st_mode & 0o077 == 0, path
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while chunk := await proc.stderr.receive_some(4096):
                log += chunk
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.decode()
    assert "shutting down" in text and token not in text and "Traceback" not in text
    server_pem = (data / "tls" / "server.pem").read_bytes()
    ident = pki.identity_from_cert(x509.load_pem_x509_certificate(server_pem))
    assert ident.is_server


async def test_server_refuses_unknown_config_key(tmp_path: Path) -> None:
    (tmp_path / "server.yaml").write_text("listen: 127.0.0.1:0\nadvertize: [x]\n")
    done = await run_cli("vigo-server-lite", "serve", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path / 'server.yaml'}: unknown key 'advertize'".encode() in done.stderr
