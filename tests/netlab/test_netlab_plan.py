"""Pure parts of netlab: names, addresses, and the exact ip/tc/nft commands. No root."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab import _commands as cmd
from netlab import _topology as topo


def test_lab_ids_are_short_hex_and_validated() -> None:
    ids = {topo.new_lab_id() for _ in range(50)}
    assert all(topo.LAB_ID_RE.match(i) for i in ids) and len(ids) > 40
    with pytest.raises(ValueError):
        topo.check_lab_id("ABCDEF")
    with pytest.raises(ValueError):
        topo.namespace_name("abc", "envoy1")


def test_namespace_names_round_trip() -> None:
    assert topo.namespace_name("ab12cd", "envoy7") == "vgl-ab12cd-envoy7"
    assert topo.bridge_namespace("ab12cd") == "vgl-ab12cd-br"
    assert topo.lab_id_of_namespace("vgl-ab12cd-envoy7") == "ab12cd"
    assert topo.lab_id_of_namespace("vgl-ab12cd-br") == "ab12cd"
    assert topo.lab_id_of_namespace("vgl-xyz-envoy7") is None
    assert topo.lab_id_of_namespace("other") is None


@pytest.mark.parametrize("name", ["", "Envoy1", "1host", "a-b", "br", "x" * 13])
def test_bad_host_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        topo.check_host_name(name)


def test_interface_names_fit_ifnamsiz() -> None:
    longest = topo.envoy_name(topo.MAX_ENVOYS)
    assert len(topo.bridge_port(longest)) <= topo.IFNAME_MAX
    assert len(topo.bridge_port("x" * 12)) <= topo.IFNAME_MAX


def test_addresses() -> None:
    assert topo.server_address() == "10.77.0.2"
    assert topo.envoy_address(1) == "10.77.0.11"
    assert topo.envoy_address(topo.MAX_ENVOYS) == "10.77.0.210"
    with pytest.raises(ValueError):
        topo.envoy_address(0)
    with pytest.raises(ValueError):
        topo.envoy_address(topo.MAX_ENVOYS + 1)


def test_plan_hosts() -> None:
    root = Path("/tmp/vgl-ab12cd")
    hosts = topo.plan_hosts("ab12cd", 2, with_server=True, root_dir=root)
    assert [(h.name, h.address, h.namespace, h.bridge_port) for h in hosts] == [
        ("server", "10.77.0.2", "vgl-ab12cd-server", "b-server"),
        ("envoy1", "10.77.0.11", "vgl-ab12cd-envoy1", "b-envoy1"),
        ("envoy2", "10.77.0.12", "vgl-ab12cd-envoy2", "b-envoy2"),
    ]
    assert hosts[1].state_dir == root / "envoy1"
    assert hosts[1].log_file == root / "logs" / "envoy1.log"
    assert [h.name for h in topo.plan_hosts("ab12cd", 1, with_server=False, root_dir=root)] == [
        "envoy1"
    ]
    with pytest.raises(ValueError, match="at least one host"):
        topo.plan_hosts("ab12cd", 0, with_server=False, root_dir=root)
    # leaves room under the 108-byte unix socket limit for sockets in state dirs
    assert len(str(topo.default_root_dir("ab12cd") / "envoy200")) < 30


def host() -> topo.Host:
    return topo.plan_hosts("ab12cd", 1, with_server=False, root_dir=Path("/r"))[0]


def test_host_setup_never_touches_the_root_namespace() -> None:
    argvs = cmd.bridge_setup("vgl-ab12cd-br") + cmd.host_setup(host(), "vgl-ab12cd-br")
    for argv in argvs:
        assert argv[:2] == ["ip", "-n"], argv  # every command names its namespace
    assert [
        "ip",
        "-n",
        "vgl-ab12cd-br",
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ] in argvs
    assert [
        "ip",
        "-n",
        "vgl-ab12cd-br",
        "link",
        "add",
        "b-envoy1",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        "vgl-ab12cd-envoy1",
    ] in argvs
    assert ["ip", "-n", "vgl-ab12cd-envoy1", "route", "add", "224.0.0.0/4", "dev", "eth0"] in argvs
    assert ["ip", "-n", "vgl-ab12cd-envoy1", "addr", "add", "10.77.0.11/24", "dev", "eth0"] in argvs


def test_netns_exec_and_user() -> None:
    assert cmd.netns_exec("ns", ["true"]) == ["ip", "netns", "exec", "ns", "true"]
    prefix = cmd.as_user("1000", "100")
    assert cmd.netns_exec("ns", ["id"], user_prefix=prefix) == [
        "ip",
        "netns",
        "exec",
        "ns",
        "setpriv",
        "--reuid=1000",
        "--regid=100",
        "--init-groups",
        "--",
        "id",
    ]
    with pytest.raises(ValueError):
        cmd.netns_exec("ns", [])


def test_rate_commands_shape_both_directions() -> None:
    up = cmd.rate_commands(host(), "vgl-ab12cd-br", 100)
    assert up == [
        [
            "tc",
            "-n",
            "vgl-ab12cd-envoy1",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            "100000kbit",
            "burst",
            "125000",
            "latency",
            "100ms",
        ],
        [
            "tc",
            "-n",
            "vgl-ab12cd-br",
            "qdisc",
            "replace",
            "dev",
            "b-envoy1",
            "root",
            "tbf",
            "rate",
            "100000kbit",
            "burst",
            "125000",
            "latency",
            "100ms",
        ],
    ]
    down = cmd.rate_commands(host(), "vgl-ab12cd-br", None)
    assert down == [
        ["tc", "-n", "vgl-ab12cd-envoy1", "qdisc", "del", "dev", "eth0", "root"],
        ["tc", "-n", "vgl-ab12cd-br", "qdisc", "del", "dev", "b-envoy1", "root"],
    ]
    assert cmd.tbf_burst_bytes(1) == 16_000  # floor: at least a few full packets
    assert cmd.tbf_replace("ns", "eth0", 2.5)[10] == "2500kbit"
    with pytest.raises(ValueError):
        cmd.tbf_replace("ns", "eth0", 0)


def test_nft_scripts_replace_atomically_and_heal_idempotently() -> None:
    script = cmd.nft_block("envoy2", "10.77.0.12")
    lines = script.splitlines()
    assert lines[:3] == [
        "add table inet vgl_block_envoy2",
        "delete table inet vgl_block_envoy2",
        "table inet vgl_block_envoy2 {",
    ]
    assert "    ip saddr 10.77.0.12 drop" in lines and "    ip daddr 10.77.0.12 drop" in lines
    assert script.count("type filter hook input priority 0; policy accept;") == 1
    assert script.count("type filter hook output priority 0; policy accept;") == 1
    assert cmd.nft_delete_table("vgl_cut") == "add table inet vgl_cut\ndelete table inet vgl_cut\n"
    cut = cmd.nft_cut()
    assert 'iifname != "lo" drop' in cut and 'oifname != "lo" drop' in cut
    mcast = cmd.nft_drop_multicast()
    assert mcast.count("ip daddr 224.0.0.0/4 drop") == 2 and "vgl_mcast" in mcast
    assert cmd.nft_apply("ns") == ["ip", "netns", "exec", "ns", "nft", "-f", "-"]


def test_tmpfs_commands() -> None:
    assert cmd.mount_tmpfs("/tmp/vgl-ab12cd/envoy1", 24) == [
        "mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", "/tmp/vgl-ab12cd/envoy1",
    ]  # fmt: skip
    assert cmd.remount_tmpfs("/s", 64) == ["mount", "-o", "remount,size=64m", "/s"]
    assert cmd.umount("/s") == ["umount", "/s"]
    assert cmd.umount("/s", lazy=True) == ["umount", "--lazy", "/s"]
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="whole number of MiB"):
            cmd.mount_tmpfs("/s", bad)  # type: ignore[arg-type]
