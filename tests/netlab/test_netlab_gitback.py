"""Issue 6 (gitback) on netlab: 4 envoys enrolled as dev1, web1, dev2, dev3 (the lab's
hosts are envoy1..4; the hostname an envoy enrolls with is what its certificate names
and what the patterns match), server.yaml patterns ["-web*", "dev*"]. carol's
2000-commit repo on dev1 is mirrored to dev2 and dev3, never to web1; dave (not opted
in) and a repo without .gitback.yaml are ignored. One commit → an incremental bundle
far smaller than the full one; a force-push → a full one with the old tip backed up; a
restore (as carol, by root's --user) and a plain clone of the mirror path have exactly
the source's refs and fsck clean; kill -9 of a receiver mid-fetch leaves its mirror
old or new, and it catches up after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gitback"))
from gitback_helpers import ENV, generate_repo, heads_and_tags
from user_helpers import ensure_user

from netlab.fleet import Fleet, console_script
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root, pytest.mark.timeout(600)]
NAMES = ("dev1", "web1", "dev2", "dev3")


def enroll_as(fleet: Fleet) -> None:
    token = fleet.create_token(len(NAMES))
    for h, name in zip(fleet.lab.envoys, NAMES, strict=True):
        fleet.lab.exec(
            h,
            [str(console_script("vigo")), "enroll", "--server", fleet.server_url, "--token",
             token, "--state-dir", str(h.state_dir), "--hostname", name],
            timeout_s=60,
        )  # fmt: skip


def gitback_list(fleet: Fleet, host: object) -> dict[str, Any]:
    h = fleet.lab.host(host)  # type: ignore[arg-type]
    argv = [str(console_script("vigo")), "swarm", "gitback", "list", "--json"]
    out = fleet.lab.exec(h, [*argv, "--state-dir", str(h.state_dir)], timeout_s=60).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def mirror_seq(fleet: Fleet, host: object, project: str = "notes") -> int:
    try:
        found = [m for m in gitback_list(fleet, host)["mirrors"] if m["project"] == project]
    except Exception:  # the daemon is restarting
        return -1
    return found[0]["seq"] if found else 0


def as_carol(fleet: Fleet, host: object, *git_args: str) -> str:
    env = {k: v for k, v in ENV.items() if k.startswith("GIT_")} | {"HOME": "/nonexistent"}
    argv = ["git", *git_args]
    return fleet.lab.exec(host, argv, user="vgcarol", env=env, timeout_s=60).stdout  # type: ignore[arg-type]


def test_gitback_on_four_envoys(fleet_factory: FleetFactory) -> None:
    carol, dave = ensure_user("vgcarol"), ensure_user("vgdave")
    fleet = fleet_factory(
        4,
        agent_config={"checkin_interval_s": 2, "gitback_scan_s": 0.5, "gitback_pull_s": 2},
        start_server=False,
    )
    fleet.data_dir.mkdir(parents=True, exist_ok=True)
    (fleet.data_dir / "server.yaml").write_text(
        'swarm:\n  gitback:\n    enabled: ["-web*", "dev*"]\n'
    )
    fleet.start_server()
    enroll_as(fleet)
    fleet.vigocli("swarm", "gitback", "users", "set", "vgcarol", "true")
    dev1, web1, dev2, dev3 = fleet.lab.envoys

    homes = fleet.lab.root_dir / "homes"
    for h in fleet.lab.envoys:
        (homes / h.name).mkdir(parents=True, exist_ok=True)
    for d in (fleet.lab.root_dir, homes, *[homes / h.name for h in fleet.lab.envoys]):
        d.chmod(0o755)
    src = homes / dev1.name / "vgcarol" / "gitback" / "notes"
    generate_repo(src, 2000, tag_every=500)
    (src / ".gitback.yaml").write_text("enabled: true\n")
    generate_repo(homes / dev1.name / "vgcarol" / "gitback" / "scratch", 3)  # no .gitback.yaml
    diary = homes / dev1.name / "vgdave" / "gitback" / "diary"
    generate_repo(diary, 3)
    (diary / ".gitback.yaml").write_text("")
    for who, pw in (("vgcarol", carol), ("vgdave", dave)):
        home = homes / dev1.name / who
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(home)], check=True)
        home.chmod(0o700)

    for h in fleet.lab.envoys:
        fleet.start_envoy(h, {"home_root": str(homes / h.name)})
    fleet.wait_until_confirmed(timeout_s=90)

    fleet.wait_for(
        lambda: mirror_seq(fleet, dev2) == 1 and mirror_seq(fleet, dev3) == 1,
        120,
        "carol's notes mirrored on dev2 and dev3",
    )
    want = heads_and_tags(src / ".git")
    mirrors = {h.name: gitback_list(fleet, h)["mirrors"] for h in (dev2, dev3)}
    for host, found in mirrors.items():
        assert [m["project"] for m in found] == ["notes"], host  # not scratch, not dave's
        assert heads_and_tags(Path(found[0]["path"])) == want, host
    web = gitback_list(fleet, web1)
    assert web["allowed"] is False and web["mirrors"] == []
    assert not (web1.state_dir / "swarm" / "gitback" / "mirrors").exists()
    published = gitback_list(fleet, dev1)["published"]
    assert [(p["project"], p["kind"]) for p in published] == [("notes", "full")]
    full_bytes = published[0]["size_bytes"]

    # one commit → a small incremental bundle, mirrors updated
    (src / "new.txt").write_text("one more\n")
    os.chown(src / "new.txt", carol.pw_uid, carol.pw_gid)
    as_carol(fleet, dev1, "-C", str(src), "add", "new.txt")
    as_carol(fleet, dev1, "-C", str(src), "commit", "-q", "-m", "one more")
    fleet.wait_for(
        lambda: mirror_seq(fleet, dev2) == 2 and mirror_seq(fleet, dev3) == 2, 60, "seq 2"
    )
    inc = gitback_list(fleet, dev1)["published"][0]
    assert inc["kind"] == "incremental" and inc["size_bytes"] * 50 < full_bytes
    want = heads_and_tags(src / ".git")
    for h in (dev2, dev3):
        assert heads_and_tags(Path(gitback_list(fleet, h)["mirrors"][0]["path"])) == want

    # force-push → full bundle, the old tip under the backup namespace; dev3 is killed
    # (-9) while it fetches and applies, and catches up after a restart
    old_main = want["refs/heads/main"]
    as_carol(fleet, dev1, "-C", str(src), "reset", "-q", "--hard", "HEAD~100")
    as_carol(fleet, dev1, "-C", str(src), "commit", "-q", "--allow-empty", "-m", "rewritten")
    fleet.wait_for(lambda: gitback_list(fleet, dev1)["published"][0]["seq"] == 3, 60, "seq 3")
    fleet.lab.kill9(dev3)
    dev3_mirror = dev3.state_dir / "swarm" / "gitback" / "mirrors"
    path3 = next(dev3_mirror.glob("*/vgcarol/notes.git"))
    refs3 = heads_and_tags(path3)
    assert refs3 in (want, heads_and_tags(src / ".git"))  # old or new, never between
    subprocess.run(["git", "--git-dir", str(path3), "fsck", "--full", "--no-dangling"],
                   env=ENV, check=True, capture_output=True)  # fmt: skip
    fleet.start_envoy(dev3, {"home_root": str(homes / dev3.name)})
    fleet.wait_for(
        lambda: mirror_seq(fleet, dev2) == 3 and mirror_seq(fleet, dev3) == 3, 90, "seq 3"
    )
    want = heads_and_tags(src / ".git")
    assert gitback_list(fleet, dev1)["published"][0]["kind"] == "full"
    for h in (dev2, dev3):
        path = Path(gitback_list(fleet, h)["mirrors"][0]["path"])
        refs = heads_and_tags(path)
        assert refs == want
        backup = subprocess.run(
            ["git", "--git-dir", str(path), "rev-parse", "refs/gitback-backup/3/heads/main"],
            env=ENV, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert backup == old_main

    # restore on dev2 as carol (root asks for her), and a plain clone of the mirror path
    dest = homes / dev2.name / "vgcarol" / "restored"  # her home there (made 0700 for her)
    out = fleet.lab.exec(
        dev2,
        [str(console_script("vigo")), "swarm", "gitback", "restore", "dev1", "notes",
         str(dest), "--user", "vgcarol", "--state-dir", str(dev2.state_dir)],
        timeout_s=120,
    ).stdout  # fmt: skip
    assert "restored notes (seq 3)" in out
    assert heads_and_tags(dest / ".git") == want
    assert os.stat(dest / ".git").st_uid == carol.pw_uid
    clone = fleet.lab.root_dir / "plain-clone.git"
    mirror2 = Path(gitback_list(fleet, dev2)["mirrors"][0]["path"])
    subprocess.run(["git", "clone", "-q", "--mirror", str(mirror2), str(clone)],
                   env=ENV, check=True)  # fmt: skip
    cloned = heads_and_tags(clone)
    assert cloned == want
    for repo in (dest / ".git", clone):
        subprocess.run(["git", "--git-dir", str(repo), "fsck", "--full"], env=ENV, check=True,
                       capture_output=True)  # fmt: skip
    logs = web1.log_file.read_text(errors="replace")
    assert "gitback: mirror" not in logs
