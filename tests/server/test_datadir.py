"""The data dir across restarts: what is kept, what is reissued, and the server's own names."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
from cryptography import x509

from vigo_agent.enroll import Refused, enroll
from vigo_server_lite.config import ServerConfig
from vigo_server_lite.datadir import prepare

from .conftest import run_cli, start_server


def _sans(pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v.value) for v in san}


def test_restart_keeps_identity_and_reissues_on_new_names(tmp_path: Path) -> None:
    cfg = ServerConfig(data_dir=tmp_path, advertise=("vigo.test",))
    first = prepare(cfg)
    first.store.close()
    tls = first.paths.tls_cert.read_bytes()
    assert {"vigo.test", "127.0.0.1", "localhost", "urn:vigo:server-lite"} <= _sans(tls)

    again = prepare(cfg)
    again.store.close()
    assert again.paths.tls_cert.read_bytes() == tls
    assert again.admin_token == first.admin_token
    assert again.ca.fingerprint == first.ca.fingerprint

    moved = prepare(ServerConfig(data_dir=tmp_path, advertise=("10.9.8.7", "vigo2.test")))
    moved.store.close()
    sans = _sans(moved.paths.tls_cert.read_bytes())
    assert {"10.9.8.7", "vigo2.test"} <= sans and "vigo.test" not in sans
    assert moved.ca.fingerprint == first.ca.fingerprint


async def test_hostname_equal_to_an_advertised_name_is_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    srv = await start_server(nursery, tmp_path, advertise=("vigo.test",))
    token = await srv.token(max_uses=2)
    for name in ("vigo.test", "VIGO.TEST", socket.gethostname()):
        with pytest.raises(Refused) as info:
            await enroll(srv.url, token, tmp_path / "e", hostname=name)
        assert info.value.code == "bad_hostname"


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = await run_cli(
            "vigo-server-lite",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
        )
    assert done.returncode == 1
    assert b"cannot listen on" in done.stderr and b"Traceback" not in done.stderr
