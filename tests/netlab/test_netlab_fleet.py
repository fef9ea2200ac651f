"""``Fleet`` against stand-in commands (``fake_vigo.py``) that follow the contract: the
orchestration (spawn, readiness, tokens, enrollment, agent.yaml, peers JSON, waiting,
failure reporting) runs for real in namespaces, with real multicast. Needs root."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from netlab import NetlabError, WaitTimeout
from netlab.fleet import Fleet, console_script, peer_source
from netlab.pytest_fixtures import FleetFactory, LabFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root]


def test_fleet_enrolls_starts_and_sees_peers(fleet_factory: FleetFactory, fake_bin: Path) -> None:
    fleet = fleet_factory(3, bin_dir=fake_bin, agent_config={"checkin_interval_s": 2})
    assert fleet.server_url == "https://10.77.0.2:8443"
    assert fleet.ca_file.exists() and fleet.admin_token_file.exists()
    assert fleet.create_token(3).startswith("fake-")
    fleet.enroll_all()
    for host in fleet.lab.envoys:
        fleet.start_envoy(host, config={"multicast_enabled": True})
    found = fleet.wait_until_confirmed(timeout_s=30)
    assert sorted(found) == ["envoy1", "envoy2", "envoy3"]
    assert all(0 <= t < 30 for t in found.values())
    config = yaml.safe_load((fleet.lab.host("envoy1").state_dir / "agent.yaml").read_text())
    assert config == {"checkin_interval_s": 2, "multicast_enabled": True}
    peers = fleet.peers("envoy1")
    assert {p["uuid"] for p in peers} == {fleet.uuid("envoy2"), fleet.uuid("envoy3")}
    assert {peer_source(p) for p in peers} == {"multicast"}
    assert fleet.stop_envoy("envoy1") < 5
    assert not fleet.lab.is_running("envoy1")


def test_fleet_wait_names_what_is_missing(fleet_factory: FleetFactory, fake_bin: Path) -> None:
    fleet = fleet_factory(2, bin_dir=fake_bin)
    fleet.enroll_all()
    fleet.lab.drop_multicast("envoy2")
    for host in fleet.lab.envoys:
        fleet.start_envoy(host)
    with pytest.raises(WaitTimeout) as info:
        fleet.wait_until_confirmed(timeout_s=2)
    assert isinstance(info.value, TimeoutError)
    assert "envoy1 lacks envoy2" in str(info.value) and "envoy2 lacks envoy1" in str(info.value)


def test_fleet_reports_a_crashed_daemon_with_its_log(
    fleet_factory: FleetFactory, fake_bin: Path
) -> None:
    fleet = fleet_factory(1, bin_dir=fake_bin)
    fleet.enroll("envoy1")
    fleet.start_envoy("envoy1", config={"crash": True})
    with pytest.raises(NetlabError, match="crashing as configured"):
        fleet.wait_ready(timeout_s=30)


def test_fleet_without_server_host_says_so(lab_factory: LabFactory) -> None:
    fleet = Fleet(lab_factory(1, with_server=False))
    with pytest.raises(NetlabError, match="without a server host"):
        fleet.start_server()


def test_console_scripts_come_from_this_venv() -> None:
    assert console_script("vigo") == Path(sys.executable).parent / "vigo"
