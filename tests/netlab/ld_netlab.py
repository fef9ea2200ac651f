"""Longdrawer in the netlab: bob, a real local user (created here, removed after), on
several envoys. The envoys share this machine's filesystem, so each gets its own home
root (agent.yaml home_root); bob's actions run as him (runuser)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab.fleet import Fleet, console_script
from netlab.pytest_fixtures import FleetFactory

USER = "ldbob"


@pytest.fixture
def bob() -> Iterator[pwd.struct_passwd]:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(USER)
        subprocess.run(["userdel", USER], check=True, capture_output=True)
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", USER],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(USER)
    finally:
        subprocess.run(["userdel", USER], check=False, capture_output=True)


@pytest.fixture
def homes_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path (0700 root): bob must be able to reach his folder.
    path = Path(tempfile.mkdtemp(prefix="vigo-ld-homes-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_bob(script: str) -> None:
    subprocess.run(["runuser", "-u", USER, "--", "sh", "-ec", script], check=True, timeout=120)


def tree(root: Path) -> str:
    """A digest of everything below root (content, mode, owner, symlink target)."""
    out = subprocess.run(
        [
            "sh",
            "-c",
            "cd \"$1\" && find . -mindepth 1 -printf '%P %y %m %u %g %l\\n' | sort"
            " && find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
            "sh",
            str(root),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    return out.stdout if out.returncode == 0 else f"(changing: {out.returncode})"


def ld_status(fleet: Fleet, host: object) -> dict[str, object]:
    h = fleet.lab.host(host)  # type: ignore[arg-type]
    argv = [str(console_script("vigo")), "swarm", "longdrawer", "status"]
    res = fleet.lab.exec(h, [*argv, "--state-dir", str(h.state_dir), "--json"], timeout_s=30)
    (person,) = [p for p in json.loads(res.stdout) if p["person"] == USER]
    return person  # type: ignore[no-any-return]


def bob_fleet(
    fleet_factory: FleetFactory,
    bob: pwd.struct_passwd,
    homes_dir: Path,
    envoys: int,
    *,
    rate_mbit: float | None = None,
) -> tuple[Fleet, list[Path]]:
    """Envoys with longdrawer on, each with a ~/longdrawer/ for bob, partnered."""
    fleet = fleet_factory(
        envoys,
        agent_config={"longdrawer_enabled": True, "longdrawer_rescan_interval_s": 5},
        rate_mbit=rate_mbit,
    )
    fleet.enroll_all()
    folders = []
    for h in fleet.lab.envoys:
        home = homes_dir / h.name
        (home / USER / "longdrawer").mkdir(parents=True)
        for p in (home / USER, home / USER / "longdrawer"):
            os.chown(p, bob.pw_uid, bob.pw_gid)
        home.chmod(0o755)
        folders.append(home / USER / "longdrawer")
        fleet.start_envoy(h, {"home_root": str(home)})
    fleet.wait_until_confirmed(timeout_s=60)
    hosts = fleet.lab.envoys
    fleet.wait_for(
        lambda: all(len(ld_status(fleet, h)["peers"]) == envoys - 1 for h in hosts),  # type: ignore[arg-type]
        60,
        f"each envoy partnered with the other {envoys - 1} for bob",
    )
    return fleet, folders
