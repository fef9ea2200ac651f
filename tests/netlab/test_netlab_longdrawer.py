"""Issue 5, done-when (netlab): bob on three envoys. Create, modify, append, rename,
delete, mkdir, rmdir, chmod, symlink and a large file on one; every change reaches the
other two, shown by a tree digest (content, modes, ownership, symlink targets); the
rename of the large file moves no bytes (bytes_fetched counters). bob is a real local
user, created here and removed after; his actions run as him (runuser). The envoys
share this machine's filesystem, so each gets its own home root (agent.yaml home_root).
"""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest
from ld_netlab import USER, as_bob, bob_fleet, ld_status, tree

from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root, pytest.mark.timeout(400)]

BIG_MIB = 256


def test_bob_on_three_envoys_sees_one_tree(
    fleet_factory: FleetFactory, bob: pwd.struct_passwd, homes_dir: Path
) -> None:
    fleet, folders = bob_fleet(fleet_factory, bob, homes_dir, 3)
    hosts = fleet.lab.envoys
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
