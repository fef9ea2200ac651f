"""The lab on a real kernel: topology, reachability, multicast, partitions, processes,
rate limits and teardown. Needs root."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Probe

from netlab import CommandError, Lab, NetlabError, wait_for
from netlab.pytest_fixtures import LabFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root]

RUN_DIR = Path("/run/vigo-netlab")


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in out.stdout.splitlines())


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def test_layout_and_root_namespace_untouched(lab_factory: LabFactory) -> None:
    before = root_links()
    lab = lab_factory(3, with_server=False)
    assert root_links() == before
    assert [h.name for h in lab.hosts] == ["envoy1", "envoy2", "envoy3"]
    assert [h.address for h in lab.hosts] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert {f"vgl-{lab.id}-{n}" for n in ("envoy1", "envoy2", "envoy3", "br")} <= set(namespaces())
    addr = lab.exec("envoy2", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "10.77.0.12/24" in addr
    routes = lab.exec("envoy2", ["ip", "route"]).stdout
    assert "224.0.0.0/4 dev eth0" in routes
    bridge = subprocess.run(
        ["ip", "-n", lab.bridge_namespace, "-d", "link", "show", "br0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mcast_snooping 0" in bridge
    assert (RUN_DIR / f"{lab.id}.json").exists()
    assert all(h.state_dir.is_dir() for h in lab.hosts)


def test_hosts_ping_each_other(lab_factory: LabFactory, probe: Probe) -> None:
    lab = lab_factory(3, with_server=False)
    for src, dst in [("envoy1", "envoy2"), ("envoy2", "envoy3"), ("envoy3", "envoy1")]:
        assert probe.ping(lab, src, dst, timeout_s=5), f"{src} cannot reach {dst}"


def test_multicast_crosses_the_bridge(lab_factory: LabFactory, probe: Probe) -> None:
    lab = lab_factory(3, with_server=False)
    assert probe.multicast(lab, "envoy1", ["envoy2", "envoy3"]) == {"envoy2": True, "envoy3": True}


def test_drop_multicast_stops_multicast_only(lab_factory: LabFactory, probe: Probe) -> None:
    lab = lab_factory(3, with_server=False)
    lab.drop_multicast("envoy3")
    assert probe.multicast(lab, "envoy1", ["envoy2", "envoy3"]) == {"envoy2": True, "envoy3": False}
    assert probe.ping(lab, "envoy1", "envoy3", timeout_s=5)  # unicast still flows
    lab.drop_multicast("envoy1")  # dropped on the sending side too
    assert probe.multicast(lab, "envoy1", ["envoy2"]) == {"envoy2": False}
    lab.allow_multicast("envoy1")
    lab.allow_multicast("envoy3")
    lab.allow_multicast("envoy3")  # idempotent
    assert probe.multicast(lab, "envoy1", ["envoy2", "envoy3"]) == {"envoy2": True, "envoy3": True}


def test_block_cuts_one_pair_and_unblock_heals(lab_factory: LabFactory, probe: Probe) -> None:
    lab = lab_factory(3, with_server=False)
    lab.block("envoy1", "envoy2")
    lab.block("envoy1", "envoy2")  # idempotent: replaces, does not stack
    assert not probe.ping(lab, "envoy1", "envoy2")
    assert not probe.ping(lab, "envoy2", "envoy1")
    assert probe.ping(lab, "envoy1", "envoy3", timeout_s=5)
    assert probe.ping(lab, "envoy3", "envoy2", timeout_s=5)
    lab.unblock("envoy2", "envoy1")  # order does not matter
    assert probe.ping(lab, "envoy1", "envoy2", timeout_s=5)
    assert probe.ping(lab, "envoy2", "envoy1", timeout_s=5)
    lab.unblock("envoy1", "envoy2")  # idempotent
    with pytest.raises(NetlabError, match="itself"):
        lab.block("envoy1", "envoy1")


def test_cut_isolates_a_host_and_restore_heals(lab_factory: LabFactory, probe: Probe) -> None:
    lab = lab_factory(3, with_server=False)
    lab.cut("envoy1")
    assert not probe.ping(lab, "envoy1", "envoy2")
    assert not probe.ping(lab, "envoy3", "envoy1")
    assert probe.ping(lab, "envoy2", "envoy3", timeout_s=5)
    assert lab.exec("envoy1", ["ip", "-o", "link", "show", "eth0"]).stdout.count("UP") > 0
    lab.restore("envoy1")
    lab.restore("envoy1")  # idempotent
    assert probe.ping(lab, "envoy1", "envoy2", timeout_s=5)
    assert probe.ping(lab, "envoy3", "envoy1", timeout_s=5)


def test_kill_of_a_spawned_process_returns_promptly(lab_factory: LabFactory) -> None:
    lab = lab_factory(1, with_server=False)
    pid = lab.spawn("envoy1", ["sleep", "1000"])
    assert lab.is_running("envoy1") and lab.pids("envoy1") == [pid]
    took = lab.kill("envoy1")
    assert took < 2.0
    assert not lab.is_running("envoy1")
    assert lab.kill("envoy1") == 0.0  # nothing left to kill
    lab.spawn("envoy1", ["sleep", "1000"])
    assert lab.kill9("envoy1") < 2.0
    assert not lab.is_running("envoy1")
    log = lab.host("envoy1").log_file.read_text()
    assert "netlab spawn: sleep 1000" in log


def test_kill_escalates_to_sigkill(lab_factory: LabFactory, tmp_path: Path) -> None:
    lab = lab_factory(1, with_server=False)
    ready = tmp_path / "ready"
    lab.spawn("envoy1", ["sh", "-c", f'trap "" TERM; touch {ready}; exec sleep 1000'])
    wait_for(ready.exists, 10, "the TERM-ignoring process to start")
    took = lab.kill("envoy1", signal.SIGTERM, timeout_s=0.3)
    assert 0.3 <= took < 5.0
    assert not lab.is_running("envoy1")


def test_spawned_process_sees_only_the_lab_network(lab_factory: LabFactory) -> None:
    lab = lab_factory(1, with_server=False)
    out = lab.exec("envoy1", ["ip", "-o", "link"]).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())
    assert names == ["eth0", "lo"]


def test_exec_errors_carry_the_command_and_stderr(lab_factory: LabFactory) -> None:
    lab = lab_factory(1, with_server=False)
    with pytest.raises(CommandError) as info:
        lab.exec("envoy1", ["sh", "-c", "echo oops >&2; exit 3"])
    assert info.value.returncode == 3 and "oops" in str(info.value) and "sh -c" in str(info.value)
    assert lab.exec("envoy1", ["sh", "-c", "exit 4"], check=False).returncode == 4
    with pytest.raises(CommandError, match="timed out"):
        lab.exec("envoy1", ["sleep", "10"], timeout_s=0.2)
    assert lab.exec("envoy1", ["id", "-u"], user="nobody").stdout.strip() == "65534"
    assert lab.exec("envoy1", ["sh", "-c", "echo $X"], env={"X": "y"}).stdout == "y\n"
    with pytest.raises(NetlabError, match="no host 'nope'"):
        lab.exec("nope", ["true"])


def test_rate_limit_is_installed_both_ways(lab_factory: LabFactory) -> None:
    lab = lab_factory(2, with_server=False, rate_mbit=20)
    inside, bridge = lab.qdisc("envoy1")
    assert "tbf" in inside and "rate 20Mbit" in inside
    assert "tbf" in bridge and "rate 20Mbit" in bridge
    lab.set_rate("envoy1", 2.5)
    inside, bridge = lab.qdisc("envoy1")
    assert "rate 2500Kbit" in inside and "rate 2500Kbit" in bridge
    lab.set_rate("envoy1", None)
    lab.set_rate("envoy1", None)  # idempotent
    assert all("tbf" not in q for q in lab.qdisc("envoy1"))
    assert all("tbf" in q for q in lab.qdisc("envoy2"))


def test_down_leaves_nothing_behind(lab_factory: LabFactory) -> None:
    lab = lab_factory(2)
    pids = [lab.spawn(h, ["sleep", "1000"]) for h in lab.hosts]
    helper = lab.exec("envoy1", ["sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 & echo $!"])
    pids.append(int(helper.stdout))  # not spawned by the lab: found by `ip netns pids`
    root = lab.root_dir
    lab.down()
    lab.down()  # idempotent
    assert not [ns for ns in namespaces() if ns.startswith(f"vgl-{lab.id}-")]
    assert not (RUN_DIR / f"{lab.id}.json").exists()
    assert not root.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), pid
    with pytest.raises(NetlabError, match="down"):
        lab.spawn("envoy1", ["true"])


def test_context_manager_downs_on_error() -> None:
    if not Path("/proc/self").exists():  # pragma: no cover
        pytest.skip("needs /proc")
    with pytest.raises(RuntimeError), Lab.create(1, with_server=False) as lab:
        lab.spawn("envoy1", ["sleep", "1000"])
        raise RuntimeError("boom")
    assert not [ns for ns in namespaces() if ns.startswith(f"vgl-{lab.id}-")]
    assert not (RUN_DIR / f"{lab.id}.json").exists()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def test_create_is_quick(lab_factory: LabFactory) -> None:
    started = time.monotonic()
    lab_factory(8)
    assert time.monotonic() - started < 20  # generous: ~0.3 s here; catches a hang
