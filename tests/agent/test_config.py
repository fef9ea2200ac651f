"""agent.yaml is strict: every bad key or value is refused with the key and file named."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigo_agent.config import AgentConfig, ConfigError, load_config, parse_config


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "agent.yaml") == AgentConfig()


def test_values_are_typed(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(
        "port: 1600\nmulticast_enabled: false\nadvertise_addresses: [10.0.0.5]\n"
        "checkin_interval_s: 2\nseed_dirs: [/srv/seed]\nseed_settle_s: 0.5\n"
    )
    cfg = load_config(f)
    assert cfg.port == 1600 and cfg.multicast_enabled is False
    assert cfg.advertise_addresses == ("10.0.0.5",) and cfg.checkin_interval_s == 2.0
    assert cfg.seed_dirs == ("/srv/seed",) and cfg.seed_settle_s == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot: 1531\n", "unknown key 'prot'"),
        ("port: 0\n", "port=0 is outside"),
        ("port: '1531'\n", "port must be a number"),
        ("port: true\n", "port must be a number"),
        ("multicast_enabled: 'yes'\n", "must be true or false"),
        ("advertise_addresses: 10.0.0.1\n", "must be a list"),
        ("advertise_addresses: ['10.0.0.1; reboot']\n", "not an IP address"),
        ("multicast_group: 10.0.0.1\n", "not a multicast group"),
        ("log_level: loud\n", "log_level must be one of"),
        ("seed_dirs: [relative/dir]\n", "not an absolute path"),
        ("home_root: homes\n", "home_root: 'homes' is not an absolute path"),
        ("seed_rescan_s: 0\n", "seed_rescan_s=0 is outside 1..86400"),
        ("seed_settle_s: -1\n", "seed_settle_s=-1 is outside 0..3600"),
        ("fetch_limit_mbit: -5\n", "fetch_limit_mbit=-5 is outside 0..100000"),
        ("serve_limit_mbit: fast\n", "serve_limit_mbit"),
        ("longdrawer_multicast_group: 10.0.0.1\n", "not a multicast group"),
        ("longdrawer_enabled: 1\n", "must be true or false"),
        ("longdrawer_rescan_interval_s: 0\n", "outside"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("port: [\n", "not valid YAML"),
        ("x: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(f)
    assert str(f) in str(err.value)


def test_parse_none_is_defaults() -> None:
    assert parse_config(None) == AgentConfig()
