"""The seeder's scan of ~/gitback on a real filesystem, as root for a real person:
what counts as a project, and each hostile layout refused with a clear problem."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gitback_helpers import commit, generate_repo, git
from user_helpers import temporary_user

from vigo_swarm.gitback.packer import find_projects, pack_bundle, read_tips, refs_fingerprint
from vigo_swarm.gitback.records import parse_bundle_header
from vigo_swarm.puddle import Person


def test_scan_and_hostile_layouts(shared_dir: Path) -> None:
    home = shared_dir / "erin"
    with temporary_user("vgerin", home) as pw:
        person = Person(pw.pw_uid, pw.pw_gid, home)
        gb = home / "gitback"
        generate_repo(gb / "good", 5)
        (gb / "good" / ".gitback.yaml").write_text("")
        generate_repo(gb / "noyaml", 2)  # ignored
        generate_repo(gb / "badyaml", 2)
        (gb / "badyaml" / ".gitback.yaml").write_text("enable: true\n")
        generate_repo(gb / "linkyaml", 2)
        (gb / "linkyaml" / ".gitback.yaml").symlink_to("/etc/shadow")
        (gb / "notrepo").mkdir()
        (gb / "notrepo" / ".gitback.yaml").write_text("")
        (gb / "worktree").mkdir()
        (gb / "worktree" / ".git").write_text("gitdir: /root/.git\n")  # a gitfile
        (gb / "worktree" / ".gitback.yaml").write_text("")
        generate_repo(gb / "paused", 2)
        (gb / "paused" / ".gitback.yaml").write_text("enabled: false\n")
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(home)], check=True)
        (gb / "linkdir").symlink_to(gb / "good")  # a symlinked project dir
        os.lchown(gb / "linkdir", pw.pw_uid, pw.pw_gid)
        rootowned = gb / "rootowned"  # someone else's dir inside: not a project
        generate_repo(rootowned, 2)
        (rootowned / ".gitback.yaml").write_text("")

        found = {p.name: p for p in find_projects(person)}
        assert set(found) == {
            "good",
            "badyaml",
            "linkyaml",
            "notrepo",
            "worktree",
            "paused",
        }  # fmt: skip: linkdir (a symlink) and rootowned (not erin's) are no projects
        assert found["good"].error == "" and found["good"].git_dir == gb / "good" / ".git"
        assert "unknown key 'enable'" in found["badyaml"].error
        assert "symlink" in found["linkyaml"].error
        assert "not a git repository" in found["notrepo"].error
        assert "not a git repository" in found["worktree"].error
        assert found["paused"].config is not None and not found["paused"].config.enabled

        # tips and bundles, git as erin; the fingerprint moves with a commit
        git_dir = gb / "good" / ".git"
        tips, head = read_tips(person, git_dir)
        assert head == "refs/heads/main" and set(tips) == {"refs/heads/main"}
        mark = refs_fingerprint(git_dir)
        pid = os.fork()
        if pid == 0:  # erin commits to her own repo
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.environ["HOME"] = str(home)
            commit(gb / "good", "more")
            os._exit(0)
        os.waitpid(pid, 0)
        assert refs_fingerprint(git_dir) != mark
        out = shared_dir / "inc.bundle"
        with open(out, "wb") as f:
            assert pack_bundle(person, git_dir, [tips["refs/heads/main"]], f)
        header = parse_bundle_header(out.read_bytes())
        assert header.prerequisites == {tips["refs/heads/main"]}
        with open(out, "wb") as f:  # nothing new since the current tip: git refuses
            now = read_tips(person, git_dir)[0]["refs/heads/main"]
            assert not pack_bundle(person, git_dir, [now], f)

        # ~/gitback itself a symlink: nothing at all
        os.rename(gb, home / "elsewhere")
        (home / "gitback").symlink_to(home / "elsewhere")
        assert find_projects(person) == []
        assert git(home / "elsewhere" / "good", "rev-parse", "HEAD")  # untouched
