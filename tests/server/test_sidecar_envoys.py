"""Seed-dir sidecars end to end: a real server lite, two real envoy daemons on loopback
(mTLS check-in, peer channel, gossip), the real `vigocli` and `vigo` commands.

A pair dropped on a seeder that the server has not made a seeder → a clear error in
`vigo swarm status`, nothing signed. Once an operator adds it → the other envoy gets the
target symlink with the file's sha256, and `filecast list` names the sidecar as source.
A malformed sidecar → its error in status, no record on the server. A changed file →
a new version replaces the old. A restarted seeder → nothing signed again.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from vigo_agent.config import AgentConfig
from vigo_agent.control import call
from vigo_agent.daemon import Daemon
from vigo_agent.enroll import EnrollResult
from vigo_agent.identity import load_identity

from .conftest import Harness, admin_env, load_json, run_cli

pytestmark = pytest.mark.integration


async def wait_until(pred: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """Poll ``pred`` (sync or async) until it gives something true, with a deadline."""
    with trio.move_on_after(timeout_s):
        while True:
            value = pred()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await trio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


async def start_daemon(
    nursery: trio.Nursery,
    envoy: EnrollResult,
    address: str,
    seed_dir: Path | None = None,
    checkin_interval_s: float = 1,
) -> tuple[Daemon, trio.CancelScope]:
    cfg = AgentConfig(
        listen_address=address,
        port=0,
        advertise_addresses=(address,),
        multicast_enabled=False,
        checkin_interval_s=checkin_interval_s,
        seed_dirs=(str(seed_dir),) if seed_dir else (),
        seed_settle_s=0.2,
    )
    daemon = Daemon(envoy.paths, cfg, load_identity(envoy.paths))
    if daemon.sidecars is not None:
        daemon.sidecars.retry_s = 0.5  # the test should not wait 15 s for a retry
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await daemon.run(task_status=task_status)

    await nursery.start(run)
    return daemon, scope


async def sidecars(envoy: EnrollResult) -> dict[str, dict[str, Any]]:
    """The daemon's status, asked over its control socket (from a thread: the daemon
    runs in this event loop)."""
    status = await trio.to_thread.run_sync(call, envoy.paths.control_socket, "status")
    return {Path(s["sidecar"]).name: s for s in status["sidecars"]}


async def field(envoy: EnrollResult, name: str, key: str, equal: Any = None) -> Any:
    value = (await sidecars(envoy)).get(name, {}).get(key)
    return value if equal is None else value == equal


def linked_sha(envoy: EnrollResult, target: str) -> str | None:
    link = envoy.paths.swarm_dir / "files" / target
    if not link.is_symlink():
        return None
    try:  # may dangle for a moment: the old blob is collected before the new link
        return hashlib.sha256(link.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def write_pair(seed: Path, name: str, content: bytes, sidecar: str) -> str:
    """The file first, the sidecar last (as the docs advise)."""
    (seed / name).write_bytes(content)
    (seed / f"{name}.swarm").write_text(sidecar)
    return hashlib.sha256(content).hexdigest()


@pytest.mark.timeout(180)
async def test_sidecar_on_a_seeder_reaches_another_envoy(
    srv: Harness, nursery: trio.Nursery, tmp_path: Path
) -> None:
    token = await srv.token(max_uses=2)
    seeder, web = await srv.enroll("seeder", token), await srv.enroll("web01", token)
    seed = tmp_path / "seed"
    seed.mkdir()
    env = admin_env(srv)

    _, seeding_scope = await start_daemon(nursery, seeder, "127.0.0.71", seed)
    await start_daemon(nursery, web, "127.0.0.72")

    # not a seeder yet: a clear error in status, and the server signs nothing
    want = write_pair(seed, "motd", os.urandom(3 << 20), "target: etc/motd\n")
    refused = await wait_until(
        lambda: field(seeder, "motd.swarm", "error"), "the not-a-seeder error"
    )
    assert "not_a_seeder" in refused and "vigocli swarm seeders add" in refused
    assert (await sidecars(seeder))["motd.swarm"]["state"] == "error"
    assert (await srv.admin("GET", "/swarm/filecast"))["records"] == []

    added = await run_cli("vigocli", "swarm", "seeders", "add", "seeder", env=env)
    assert added.returncode == 0, added.stderr
    listed = await run_cli("vigocli", "swarm", "seeders", "list", "--json", env=env)
    assert [s["hostname"] for s in load_json(listed.stdout)["seeders"]] == ["seeder"]

    # now it is published, signed by the server, and arrives on the other envoy
    await wait_until(lambda: linked_sha(web, "etc/motd") == want, "etc/motd on web01", 90)
    state = (await sidecars(seeder))["motd.swarm"]
    assert (state["state"], state["blob"], state["error"]) == ("published", want, "")
    out = await run_cli("vigocli", "swarm", "filecast", "list", "--json", env=env)
    (record,) = load_json(out.stdout)["records"]
    assert record["target"] == "etc/motd" and record["blob"] == want
    assert record["origin"] == "server"
    assert record["source"] == {
        "kind": "sidecar",
        "envoy": str(seeder.uuid),
        "hostname": "seeder",
        "sidecar": str(seed / "motd.swarm"),
    }
    table = await run_cli("vigocli", "swarm", "filecast", "list", env=env)
    assert b"sidecar seeder:" in table.stdout, table.stdout

    # a malformed sidecar: its error in `vigo swarm status`, nothing on the server
    version = (await srv.admin("GET", "/swarm/filecast"))["manifest_version"]
    write_pair(seed, "passwd", b"root::0:0::/:/bin/sh\n", "target: /etc/passwd\n")
    error = await wait_until(
        lambda: field(seeder, "passwd.swarm", "error"), "the bad target's error"
    )
    assert "absolute" in error
    shown = await run_cli("vigo", "swarm", "status", "--socket", str(seeder.paths.control_socket))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "passwd.swarm  error" in text and "absolute" in text, text
    assert "motd.swarm  published  -> etc/motd" in text, text
    after = await srv.admin("GET", "/swarm/filecast")
    assert after["manifest_version"] == version
    assert [r["target"] for r in after["records"]] == ["etc/motd"]
    assert not (web.paths.swarm_dir / "files" / "etc" / "passwd").exists()

    # the file changes: the next scan publishes the new version, which replaces the old
    newer = hashlib.sha256(new := os.urandom(1 << 20)).hexdigest()
    (seed / "motd.new").write_bytes(new)
    os.replace(seed / "motd.new", seed / "motd")
    await wait_until(lambda: linked_sha(web, "etc/motd") == newer, "the new etc/motd", 90)
    version = (await srv.admin("GET", "/swarm/filecast"))["manifest_version"]

    # a restarted seeder publishes nothing new (the server answers "unchanged")
    seeding_scope.cancel()
    await wait_until(lambda: not seeder.paths.control_socket.exists(), "the seeder to stop")
    await start_daemon(nursery, seeder, "127.0.0.71", seed)
    await wait_until(
        lambda: field(seeder, "motd.swarm", "state", "published"),
        "the restarted seeder to check its sidecar",
    )
    assert (await sidecars(seeder))["motd.swarm"]["current"] == {"etc/motd": "live"}
    assert (await srv.admin("GET", "/swarm/filecast"))["manifest_version"] == version
    assert (await sidecars(seeder))["passwd.swarm"]["state"] == "error"


async def test_a_distribution_reaches_an_envoy_long_before_its_next_check_in(
    srv: Harness, nursery: trio.Nursery
) -> None:
    """The manifest watch: with check-ins an hour apart, the record still arrives (the
    deadline is far shorter than the interval, so only the watch can pass this)."""
    envoy = await srv.enroll("web1")
    daemon, _ = await start_daemon(nursery, envoy, "127.0.0.73", checkin_interval_s=3600)
    await wait_until(lambda: daemon.checkin.stats.ok >= 1, "the first check-in", 30)
    record = (await srv.distribute(b"breaking news", "etc/news"))["record"]
    await wait_until(
        lambda: record["key"] in {r.key for r in daemon.gossip.manifest.records()},
        "the record through the manifest watch",
        30,
    )
    assert daemon.checkin.stats.ok == 1  # no check-in brought it
