"""`vigocli swarm filecast` end to end, as subprocesses against a real server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from vigo_swarm.manifest import from_wire, verify

from .conftest import Harness, admin_env, load_json, run_cli, start_server


async def test_distribute_list_status_revoke(srv: Harness, tmp_path: Path) -> None:
    env = admin_env(srv)
    motd = tmp_path / "motd"
    motd.write_bytes(b"welcome to the fleet\n" * 5000)
    sha = hashlib.sha256(motd.read_bytes()).hexdigest()

    done = await run_cli(
        "vigocli",
        "swarm",
        "filecast",
        "distribute",
        str(motd),
        "--target",
        "etc/motd",
        "--chunk-bytes",
        "65536",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    answer = load_json(done.stdout)
    verify(from_wire(answer["record"]), srv.authority_keys)
    assert answer["blob"]["sha256"] == sha and answer["blob"]["chunks"] == 2
    assert (srv.seed_dir / sha).read_bytes() == motd.read_bytes()

    human = await run_cli(
        "vigocli",
        "swarm",
        "filecast",
        "distribute",
        str(motd),
        "--target",
        "etc/issue",
        "--retention",
        "pinned",
        env=env,
    )
    assert human.returncode == 0, human.stderr
    assert "-> etc/issue" in human.stdout.decode() and sha in human.stdout.decode()

    listed = await run_cli("vigocli", "swarm", "filecast", "list", "--json", env=env)
    assert listed.returncode == 0
    records = load_json(listed.stdout)["records"]
    assert sorted((r["target"], r["retention_text"]) for r in records) == [
        ("etc/issue", "pinned"),
        ("etc/motd", "until_revoked"),
    ]
    table = await run_cli("vigocli", "swarm", "filecast", "list", env=env)
    assert b"TARGET" in table.stdout and b"etc/issue" in table.stdout

    envoy = await srv.enroll("web01")
    report = [{"blob": sha, "have_chunks": 1, "total_chunks": 2, "state": "partial"}]
    assert (await srv.checkin(envoy, {"port": 1531, "filecast": report})).status_code == 200
    status = await run_cli("vigocli", "swarm", "filecast", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    view = load_json(status.stdout)
    assert {r["target"]: r["envoys"][0]["state"] for r in view["records"]} == {
        "etc/issue": "partial",
        "etc/motd": "partial",
    }
    text = await run_cli("vigocli", "swarm", "filecast", "status", env=env)
    assert b"web01" in text.stdout and b"1/2" in text.stdout and b"in progress" in text.stdout

    report[0] |= {"have_chunks": 2, "state": "materialized"}
    assert (await srv.checkin(envoy, {"port": 1531, "filecast": report})).status_code == 200
    watched = await run_cli("vigocli", "swarm", "filecast", "status", "--watch", env=env)
    assert watched.returncode == 0, watched.stderr  # everything is materialized: it ends
    assert b"done:" in watched.stdout and b"\x1b[" not in watched.stdout  # not a terminal

    revoked = await run_cli(
        "vigocli", "swarm", "filecast", "revoke", "--target", "etc/motd", "--json", env=env
    )
    assert revoked.returncode == 0, revoked.stderr
    tomb = from_wire(load_json(revoked.stdout)["record"])
    verify(tomb, srv.authority_keys)
    assert tomb.tombstone
    again = await run_cli("vigocli", "swarm", "filecast", "revoke", "--target", "etc/motd", env=env)
    assert again.returncode == 1 and b"filecast_not_found" in again.stderr
    listed = load_json(
        (await run_cli("vigocli", "swarm", "filecast", "list", "--json", env=env)).stdout
    )
    assert [r["target"] for r in listed["records"]] == ["etc/issue"]
    assert [r["target"] for r in listed["revocations"]] == ["etc/motd"]


async def test_cli_errors_are_clear(srv: Harness, nursery: trio.Nursery, tmp_path: Path) -> None:
    env = admin_env(srv)
    f = tmp_path / "f"
    f.write_bytes(b"x")

    async def vigocli(*argv: str, environ: dict[str, str] = env) -> tuple[int, str]:
        done = await run_cli("vigocli", "swarm", "filecast", *argv, env=environ)
        err = done.stderr.decode()
        assert "Traceback" not in err
        return done.returncode, err

    code, err = await vigocli("distribute", str(f), "--target", "../etc/passwd")
    assert code == 2 and "'..'" in err
    code, err = await vigocli("distribute", str(f), "--target", "/etc/passwd")
    assert code == 2 and "absolute" in err
    code, err = await vigocli("distribute", str(tmp_path / "missing"), "--target", "x")
    assert code == 2 and "cannot read" in err
    code, err = await vigocli("distribute", str(tmp_path), "--target", "x")
    assert code == 2 and "Is a directory" in err
    code, err = await vigocli("distribute", "/dev/null", "--target", "x")
    assert code == 2 and "not a regular file" in err
    code, err = await vigocli("distribute", str(f), "--target", "x", "--retention", "forever")
    assert code == 2 and "until_revoked" in err
    code, err = await vigocli("distribute", str(f), "--target", "x", "--chunk-bytes", "1000")
    assert code == 2 and "power of two" in err
    code, err = await vigocli("status", "--watch", "--json")
    assert code == 2
    code, err = await vigocli("list", "--admin-token", "wrong")
    assert code == 4 and "refused the admin token" in err
    assert seen_nothing(srv)

    small = await start_server(nursery, tmp_path, "small", filecast_max_upload_bytes=1024)
    f.write_bytes(b"y" * 2048)
    code, err = await vigocli("distribute", str(f), "--target", "x", environ=admin_env(small))
    assert code == 2 and "at most 1024" in err


def seen_nothing(srv: Harness) -> bool:
    return not any(srv.seed_dir.iterdir())
