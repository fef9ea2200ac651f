"""Issue 5, done-when (netlab): bob on three envoys. Create, modify, append, rename,
delete, mkdir, rmdir, chmod, symlink and a large file on one; every change reaches the
other two, shown by a tree digest (content, modes, ownership, symlink targets); the
rename of the large file moves no bytes (bytes_fetched counters). bob is a real local
user, created here and removed after; his actions run as him (runuser). The envoys
share this machine's filesystem, so each gets its own home root (agent.yaml home_root).
"""

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
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root, pytest.mark.timeout(400)]

BIG_MIB = 256
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


def test_bob_on_three_envoys_sees_one_tree(
    fleet_factory: FleetFactory, bob: pwd.struct_passwd, homes_dir: Path
) -> None:
    fleet = fleet_factory(
        3, agent_config={"longdrawer_enabled": True, "longdrawer_rescan_interval_s": 5}
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
        lambda: all(len(ld_status(fleet, h)["peers"]) == 2 for h in hosts),  # type: ignore[arg-type]
        60,
        "each envoy partnered with the other two for bob",
    )
    a = folders[0]

    def same(what: str, timeout_s: float = 60) -> None:
        fleet.wait_for(
            lambda: tree(folders[1]) == tree(a) == tree(folders[2]) and tree(a).strip() != "",
            timeout_s,
            f"{what}: identical trees on all three",
        )

    as_bob(
        f"cd {a} && echo hello > notes.txt && mkdir -p docs/empty && echo x > docs/x.txt"
        f" && ln -s ../notes.txt docs/link && ln -s /etc/hostname abs-link"
        f" && head -c {BIG_MIB}M /dev/urandom > big.bin"
    )
    same("create", 180)
    as_bob(
        f"cd {a} && echo changed > docs/x.txt && echo more >> notes.txt && chmod 600 notes.txt"
        " && chmod 700 docs"
    )
    same("modify, append, chmod")
    fetched = [ld_status(fleet, h)["bytes_fetched"] for h in hosts[1:]]
    as_bob(f"cd {a} && mv big.bin docs/renamed.bin")
    same("rename")
    assert [ld_status(fleet, h)["bytes_fetched"] for h in hosts[1:]] == fetched
    as_bob(f"cd {a} && rm docs/x.txt && rmdir docs/empty")
    same("delete, rmdir")
    as_bob(f"cd {folders[2]} && echo from-c > from-c.txt && rm docs/link")
    same("changes on another envoy")
    listing = tree(a)
    assert "renamed.bin" in listing and "big.bin" not in listing and "docs/empty" not in listing
    assert f"notes.txt f 600 {USER} {USER}" in listing and "abs-link l 777" in listing
    assert all(ld_status(fleet, h)["refused"] == 0 for h in hosts)
