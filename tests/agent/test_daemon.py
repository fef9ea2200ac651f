"""The daemon as a person and the CLI meet it: control socket attribution by uid,
SIGTERM, restart with the same identity, and a swarm that keeps running with no server."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from fleet_helpers import FakeEnrolled
from user_helpers import ensure_user, run_cli_as

from vigo_agent.config import AgentConfig
from vigo_agent.control import ControlError, call
from vigo_agent.daemon import Daemon
from vigo_agent.identity import load_identity

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TEST_USER = "vigo-test-alice"


def local_user() -> pwd.struct_passwd:
    return ensure_user(TEST_USER)


async def start_daemon(envoy: FakeEnrolled, nursery: trio.Nursery, address: str) -> Daemon:
    """The envoy's daemon on one loopback address, multicast off, started."""
    cfg = AgentConfig(
        listen_address=address,
        port=0,
        multicast_enabled=False,
        advertise_addresses=(address,),
    )
    daemon = Daemon(envoy.paths, cfg, load_identity(envoy.paths))
    await nursery.start(daemon.run)
    return daemon


async def test_control_socket_attributes_requests_to_the_callers_uid(
    envoy: FakeEnrolled, nursery: trio.Nursery
) -> None:
    await start_daemon(envoy, nursery, "127.0.0.50")
    sock = envoy.paths.control_socket

    status = await trio.to_thread.run_sync(call, sock, "status")
    assert status["caller"]["uid"] == 0 == os.geteuid() or status["caller"]["uid"] == os.geteuid()
    assert status["uuid"] == str(envoy.uuid)

    user = local_user()
    code, out, err = await trio.to_thread.run_sync(
        run_cli_as, user, ["swarm", "status", "--socket", str(sock), "--json"]
    )
    assert code == 0, err
    assert json.loads(out)["caller"]["uid"] == user.pw_uid != 0

    # a person may read status, but not drive the daemon
    code, out, err = await trio.to_thread.run_sync(
        run_cli_as, user, ["swarm", "checkin", "--socket", str(sock)]
    )
    assert code == 4 and "only root may trigger a check-in" in err, (code, err)


async def test_control_socket_refuses_bad_requests(
    envoy: FakeEnrolled, nursery: trio.Nursery
) -> None:
    await start_daemon(envoy, nursery, "127.0.0.51")
    sock = envoy.paths.control_socket
    with pytest.raises(ControlError, match="unknown operation 'shutdown'"):
        await trio.to_thread.run_sync(call, sock, "shutdown")

    async def raw(payload: bytes) -> dict:
        stream = await trio.open_unix_socket(str(sock))
        async with stream:
            await stream.send_all(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    assert (await raw(b"not json\n"))["error"]["code"] == "bad_request"
    assert (await raw(b'{"op": 5}\n'))["error"]["code"] == "bad_request"
    assert (await raw(b'{"op": "status", "args": []}\n'))["error"]["code"] == "bad_request"
    assert (await raw(b"x" * 70000))["error"]["code"] == "too_large"
    assert (await raw(b'{"op": "status"}\n'))["ok"] is True  # still serving


def test_sigterm_exits_promptly_and_restart_keeps_identity(envoy: FakeEnrolled) -> None:
    """A real `vigo agent run` process; its server is unreachable, the swarm runs anyway."""
    envoy.paths.agent_yaml.write_text(
        "listen_address: 127.0.0.52\nadvertise_addresses: [127.0.0.52]\nport: 15310\n"
        "multicast_enabled: false\n"
    )
    uuids = []
    for _ in range(2):
        proc = subprocess.Popen(
            [str(BIN / "vigo"), "agent", "run", "--state-dir", str(envoy.paths.root)],
            stderr=subprocess.PIPE,
        )
        try:
            status = wait_for_status(envoy, proc)
            uuids.append(status["uuid"])
            assert status["port"] == 15310
            proc.send_signal(signal.SIGTERM)
            # the bound: a clean exit within 5 s of SIGTERM
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
    assert uuids == [str(envoy.uuid)] * 2
    assert not envoy.paths.control_socket.exists()  # removed on the way out


def wait_for_status(envoy: FakeEnrolled, proc: subprocess.Popen[bytes]) -> dict:
    import time

    deadline = time.monotonic() + 20
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"daemon exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            status: dict = call(envoy.paths.control_socket, "status", timeout_s=5)
            if status["checkin"]["failed"] >= 1:  # it tried the (absent) server, and lives
                return status
        except ControlError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"daemon not ready within 20 s: {last}")


def test_not_enrolled_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(BIN / "vigo"), "agent", "run", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 6
    assert "is not enrolled" in res.stderr and "vigo enroll" in res.stderr
    assert "Traceback" not in res.stderr


def test_status_without_daemon_is_a_clear_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(BIN / "vigo"), "swarm", "peers", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 3
    assert "no daemon is listening" in res.stderr and "Traceback" not in res.stderr
