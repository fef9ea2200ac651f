"""Pure logic: token format and states, hostnames, request bodies, revocation list, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vigo_server_lite.config import build_config, load_yaml
from vigo_server_lite.errors import ConfigError, Refusal
from vigo_server_lite.registry import EnvoyRecord, fleet_view, revocation_list
from vigo_server_lite.tokens import (
    JoinToken,
    TokenRecord,
    check_usable,
    hash_secret,
    new_token,
    parse_token,
)
from vigo_server_lite.validation import normalize_hostname, parse_checkin, parse_token_create

FP = "ab" * 32

GARBAGE_TOKENS = [
    "",
    "   ",
    "vigo1",
    "hello world",
    f"vigo2.0123abcd.{'s' * 32}.{FP}",  # wrong version
    f"vigo1.0123abcd.{'s' * 32}",  # no fingerprint
    f"vigo1.0123ABCD.{'s' * 32}.{FP}",  # upper-case id
    f"vigo1.0123abc.{'s' * 32}.{FP}",  # short id
    f"vigo1.0123abcd.{'s' * 10}.{FP}",  # secret under 128 bits
    f"vigo1.0123abcd.{'s' * 32}!.{FP}",  # bad secret character
    f"vigo1.0123abcd.{'s' * 32}.{FP[:-1]}",  # short fingerprint
    f"vigo1.0123abcd.{'s' * 32}.{FP}.extra",
    "vigo1." + "x" * 300,
    "vigo1.0123abcd.\x00\x00.\n",
]


def test_token_round_trip_and_secret_hidden() -> None:
    token = new_token(FP)
    assert parse_token(str(token)) == token
    assert parse_token(f"  {token}\n") == token  # a pasted newline is forgiven
    assert token.secret not in repr(token)
    assert len(token.secret) >= 22 and len(token.id) == 8


@pytest.mark.parametrize("text", GARBAGE_TOKENS)
def test_garbage_tokens_are_malformed(text: str) -> None:
    with pytest.raises(Refusal) as info:
        parse_token(text)
    assert (info.value.status, info.value.code) == (400, "token_malformed")
    assert "malformed" in info.value.message


@pytest.mark.parametrize("value", [None, 7, ["vigo1"], {"a": 1}])
def test_non_string_tokens_are_malformed(value: object) -> None:
    with pytest.raises(Refusal, match="must be a string"):
        parse_token(value)


def _record(token: JoinToken, **kw: object) -> TokenRecord:
    base: dict[str, object] = dict(
        id=token.id,
        secret_sha256=hash_secret(token.secret),
        description="",
        created_at=0.0,
        expires_at=100.0,
        max_uses=2,
        uses=0,
        revoked_at=None,
    )
    base.update(kw)
    return TokenRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "now", "code"),
    [
        ({"revoked_at": 5.0}, 10.0, "token_revoked"),
        ({}, 100.0, "token_expired"),
        ({"uses": 2}, 10.0, "token_exhausted"),
        ({"secret_sha256": hash_secret("another-secret-of-enough-length")}, 10.0, "token_unknown"),
    ],
)
def test_token_states_refuse_with_their_code(
    changes: dict[str, object], now: float, code: str
) -> None:
    token = new_token(FP)
    with pytest.raises(Refusal) as info:
        check_usable(_record(token, **changes), token, FP, now)
    assert info.value.code == code and info.value.status == 403


def test_token_usable_and_other_ca_and_unknown() -> None:
    token = new_token(FP)
    assert check_usable(_record(token), token, FP, 10.0).state(10.0) == "active"
    with pytest.raises(Refusal, match="another fleet CA"):
        check_usable(_record(token), token, "cd" * 32, 10.0)
    with pytest.raises(Refusal) as info:
        check_usable(None, token, FP, 10.0)
    assert info.value.code == "token_unknown"


@pytest.mark.parametrize("name", ["web01", "Web01.Example.NET", "a", "x-1.y-2", "a" * 63])
def test_good_hostnames(name: str) -> None:
    assert normalize_hostname(name) == name.lower()


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-web",
        "web-",
        "we_b",
        "a..b",
        "a" * 64,
        ".".join(["a" * 60] * 5),
        "10.0.0.1",
        "::1",
        "wëb",
        "web01.",
        "a b",
        "x;rm -rf",
        5,
        None,
    ],
)
def test_bad_hostnames(name: object) -> None:
    with pytest.raises(Refusal) as info:
        normalize_hostname(name)
    assert info.value.code == "bad_hostname"


def test_hostname_equal_to_a_server_name_is_refused() -> None:
    with pytest.raises(Refusal, match="server lite's own names"):
        normalize_hostname("VIGO.example.net", reserved=("vigo.example.net",))


@pytest.mark.parametrize(
    "body",
    [
        [],
        "x",
        {"port": 0},
        {"port": 65536},
        {"port": "1531"},
        {"port": True},
        {"port": 1531, "addresses": "10.0.0.1"},
        {"port": 1531, "addresses": ["10.0.0.1"] * 33},
        {"port": 1531, "addresses": ["not-an-ip"]},
        {"port": 1531, "addresses": ["0.0.0.0"]},
        {"port": 1531, "addresses": [5]},
        {"port": 1531, "uuid": "spoofed"},
        {"port": 1531, "manifest_version": -1},
        {"addresses": []},
    ],
)
def test_bad_checkin_bodies(body: object) -> None:
    with pytest.raises(Refusal) as info:
        parse_checkin(body)
    assert info.value.status == 400


def test_checkin_body_normalizes_addresses() -> None:
    req = parse_checkin({"port": 1531, "addresses": ["10.0.0.1", "10.0.0.1", "fe80:0::1"]})
    assert req.addresses == ("10.0.0.1", "fe80::1")


@pytest.mark.parametrize(
    "body", [{"ttl_s": 0}, {"max_uses": 0}, {"ttl_s": 1.5}, {"description": 5}, {"x": 1}]
)
def test_bad_token_create_bodies(body: object) -> None:
    with pytest.raises(Refusal):
        parse_token_create(body)


def _envoy(uuid: str, state: str, serials: tuple[str, ...], **kw: object) -> EnvoyRecord:
    fields: dict[str, Any] = {
        "uuid": uuid,
        "hostname": f"h-{uuid}",
        "state": state,
        "enrolled_at": 0.0,
        "token_id": None,
        "serials": serials,
        **kw,
    }
    return EnvoyRecord(**fields)


def test_revocation_list_and_peer_hints() -> None:
    envoys = [
        _envoy("a", "active", ("1",), last_checkin=1.0, port=1531, addresses=("10.0.0.1",)),
        _envoy("b", "active", ("2", "3"), revoked_serials=("2",)),
        _envoy("c", "replaced", ("4",), replaced_by="a"),
        _envoy("d", "revoked", ("5", "6"), last_checkin=1.0, port=1531),
    ]
    rl = revocation_list(envoys)
    assert rl.serials == {"2", "4", "5", "6"}
    assert rl.uuids == {"c", "d"}
    view = fleet_view(envoys)
    assert [p["uuid"] for p in view.peers_for("b")] == ["a"]  # b never checked in; d revoked
    assert view.peers_for("a") == []


def test_server_yaml_is_strict(tmp_path: Path) -> None:
    (tmp_path / "server.yaml").write_text("listen: 127.0.0.1:9\ncheckin_intervl_s: 5\n")
    with pytest.raises(ConfigError, match=r"server.yaml: unknown key 'checkin_intervl_s'"):
        load_yaml(tmp_path / "server.yaml")
    (tmp_path / "server.yaml").write_text("listen: 127.0.0.1:9\ncheckin_interval_s: 5\n")
    cfg = build_config(data_dir=tmp_path, checkin_interval_s=None)
    assert (cfg.listen_host, cfg.listen_port, cfg.checkin_interval_s) == ("127.0.0.1", 9, 5)
    cfg = build_config(data_dir=tmp_path, listen="[::1]:0", checkin_interval_s=9)
    assert (cfg.listen_host, cfg.listen_port, cfg.checkin_interval_s) == ("::1", 0, 9)
    with pytest.raises(ConfigError, match="checkin_interval_s"):
        build_config(data_dir=tmp_path, checkin_interval_s=0)
