"""Gitback on the server lite: server.yaml patterns, people's flags, the check-in field."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vigo_server_lite.config import build_config
from vigo_server_lite.errors import ConfigError

from .conftest import Harness, admin_env, error_code, load_json, run_cli, start_server


def test_server_yaml_gitback_patterns(tmp_path: Path) -> None:
    yaml_file = tmp_path / "server.yaml"
    yaml_file.write_text('swarm:\n  gitback:\n    enabled: ["-web*", "dev*"]\n')
    assert build_config(data_dir=tmp_path).gitback_enabled == ("-web*", "dev*")
    yaml_file.write_text("listen: 127.0.0.1:9\n")
    assert build_config(data_dir=tmp_path).gitback_enabled == ()  # default deny
    for text, problem in (
        ("swarm:\n  gitback:\n    enabld: []\n", "only the key 'enabled'"),
        ("swarm:\n  gitbak: {}\n", "only the key 'gitback'"),
        ("swarm:\n  gitback:\n    enabled: [Web]\n", "swarm.gitback.enabled"),
        ("swarm:\n  gitback:\n    enabled: dev*\n", "list"),
    ):
        yaml_file.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            build_config(data_dir=tmp_path)


async def test_user_flags_and_checkin_answer(nursery: trio.Nursery, tmp_path: Path) -> None:
    srv: Harness = await start_server(nursery, tmp_path, gitback_enabled=("-web*", "dev*"))
    dev = await srv.enroll("dev1")
    await srv.enroll("web1")
    answer = (await srv.checkin(dev)).json()
    assert answer["gitback"] == {"enabled": ["-web*", "dev*"], "users": []}

    set_on = await srv.admin("PUT", "/swarm/gitback/users/carol", {"gitback": True})
    assert set_on == {"name": "carol", "gitback": True, "changed": True}
    again = await srv.admin("PUT", "/swarm/gitback/users/carol", {"gitback": True})
    assert again["changed"] is False
    await srv.admin("PUT", "/swarm/gitback/users/dave", {"gitback": False})
    answer = (await srv.checkin(dev)).json()
    assert answer["gitback"]["users"] == ["carol"]  # dave is off

    shown = await srv.admin("GET", "/swarm/gitback")
    assert {e["hostname"]: e["allowed"] for e in shown["envoys"]} == {"dev1": True, "web1": False}
    listed = await srv.admin("GET", "/swarm/gitback/users")
    assert [(u["name"], u["gitback"]) for u in listed["users"]] == [
        ("carol", True),
        ("dave", False),
    ]

    async with srv.client() as c:
        h = srv.admin_headers
        for path, body in (
            ("/api/v1/swarm/gitback/users/Carol!", {"gitback": True}),
            ("/api/v1/swarm/gitback/users/-rf", {"gitback": True}),
            ("/api/v1/swarm/gitback/users/erin", {"gitback": "yes"}),
            ("/api/v1/swarm/gitback/users/erin", {"gitback": True, "x": 1}),
        ):
            resp = await c.put(path, json=body, headers=h)
            assert (resp.status_code, error_code(resp)) == (400, "bad_request"), path
        resp = await c.put("/api/v1/swarm/gitback/users/erin", json={"gitback": True})
        assert resp.status_code == 401
    after = await srv.admin("GET", "/swarm/gitback/users")
    assert [u["name"] for u in after["users"]] == ["carol", "dave"]  # nothing changed


async def test_vigocli_gitback_users(nursery: trio.Nursery, tmp_path: Path) -> None:
    srv = await start_server(nursery, tmp_path, gitback_enabled=("dev*",))
    env = admin_env(srv)
    done = await run_cli("vigocli", "swarm", "gitback", "users", "set", "carol", "true", env=env)
    assert done.returncode == 0 and b"carol is opted in" in done.stdout
    listed = await run_cli("vigocli", "swarm", "gitback", "users", "list", "--json", env=env)
    assert load_json(listed.stdout)["users"][0]["name"] == "carol"
    shown = await run_cli("vigocli", "swarm", "gitback", "show", env=env)
    assert b"dev*" in shown.stdout and b"carol" in shown.stdout
    bad = await run_cli("vigocli", "swarm", "gitback", "users", "set", "Bad!", "true", env=env)
    assert bad.returncode == 2 and b"not a login name" in bad.stderr
