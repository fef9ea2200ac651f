"""Gitback between real envoy nodes on loopback (real mTLS, real git, real users):
carol's repo on dev1 is mirrored to dev2 and never to web1; dave (not opted in) and a
repo without .gitback.yaml are ignored; a commit travels as a small incremental bundle,
a force-push as a full one with backups; a restore as carol has exactly the source's
refs; records from the wrong seeder, from a denied envoy, and a bundle bigger than its
record are refused with the mirror unchanged."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from fleet_helpers import make_envoy
from gitback_helpers import commit, generate_repo, git, heads_and_tags
from user_helpers import temporary_user

from vigo_agent.gitback_ops import people_by_name, restore
from vigo_server_lite.ca import FleetCA
from vigo_swarm import DiscoveryConfig, SwarmConfig, SwarmNode
from vigo_swarm.gitback.mirror import Mirror, mirror_path
from vigo_swarm.gitback.policy import GitbackPolicy
from vigo_swarm.gitback.service import RECORDS_PATH, GitbackConfig, GitbackService
from vigo_swarm.puddle import Person

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
POLICY = GitbackPolicy(("-web*", "dev*"), frozenset({"carol"}))


async def start(
    ca: FleetCA,
    tmp: Path,
    nursery: trio.Nursery,
    name: str,
    octet: int,
    mport: int,
    people: Callable[[str], Person | None],
) -> GitbackService:
    env = make_envoy(ca, tmp, name)
    addr = f"127.0.0.{octet}"
    node = SwarmNode(
        env.node_identity,
        SwarmConfig(
            listen_address=addr,
            port=0,
            advertise_addresses=(addr,),
            discovery=DiscoveryConfig(port=mport, interface_address=addr, announce_interval_s=0.5),
        ),
    )
    svc = GitbackService(node, tmp / name / "swarm" / "gitback", people, GitbackConfig(0.2, 1.0))
    svc.set_policy(POLICY)
    await nursery.start(node.run)
    await nursery.start(svc.run)
    return svc


async def wait_until(pred: Callable[[], object], timeout_s: float = 60.0) -> None:
    with trio.fail_after(timeout_s):
        while not pred():  # cheap checks (a git cat-file at most): run in place
            await trio.sleep(0.05)


def as_owner(path: Path, user: pwd.struct_passwd) -> None:
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(path)], check=True)


def mirrored(svc: GitbackService, seeder: GitbackService, project: str = "notes") -> Mirror:
    return Mirror(mirror_path(svc.root, seeder.me, "carol", project))


async def test_gitback_across_envoys(
    tmp_path: Path, shared_dir: Path, nursery: trio.Nursery
) -> None:
    with (
        temporary_user("vgcarol", shared_dir / "carol") as carol_pw,
        temporary_user("vgdave", shared_dir / "dave") as dave_pw,
    ):
        await _scenario(tmp_path, shared_dir, nursery, carol_pw, dave_pw)


async def _scenario(
    tmp_path: Path,
    shared_dir: Path,
    nursery: trio.Nursery,
    carol_pw: pwd.struct_passwd,
    dave_pw: pwd.struct_passwd,
) -> None:
    # login names in records are what the server lists; map them onto the test users
    names = {"carol": carol_pw.pw_name, "dave": dave_pw.pw_name}
    lookup = people_by_name("")

    def dev1_people(name: str) -> Person | None:
        return lookup(names.get(name, "nobody-here"))

    src = shared_dir / "carol" / "gitback" / "notes"
    generate_repo(src, 300, tag_every=100)
    (src / ".gitback.yaml").write_text("enabled: true\n")
    scratch = shared_dir / "carol" / "gitback" / "scratch"  # no .gitback.yaml: ignored
    generate_repo(scratch, 3)
    as_owner(shared_dir / "carol", carol_pw)
    dave_repo = shared_dir / "dave" / "gitback" / "diary"
    generate_repo(dave_repo, 3)
    (dave_repo / ".gitback.yaml").write_text("")
    as_owner(shared_dir / "dave", dave_pw)

    ca = FleetCA.load_or_create(tmp_path / "ca")
    mport = 40000 + uuid.uuid4().int % 20000
    none: Callable[[str], Person | None] = lambda name: None  # noqa: E731
    dev1 = await start(ca, tmp_path, nursery, "dev1", 31, mport, dev1_people)
    dev2 = await start(ca, tmp_path, nursery, "dev2", 32, mport, none)
    web1 = await start(ca, tmp_path, nursery, "web1", 33, mport, none)
    svcs = [dev1, dev2, web1]
    await wait_until(lambda: all(len(s.node.peers()) == 2 for s in svcs))

    m2 = mirrored(dev2, dev1)
    await wait_until(lambda: m2.state().seq == 1)
    assert heads_and_tags(m2.path) == heads_and_tags(src / ".git")
    assert web1.records == {} and not (web1.root / "mirrors").exists()
    assert {k[2] for k in dev2.records} == {"notes"}  # not scratch, not dave's diary
    owner = os.stat(m2.path)
    assert (owner.st_uid, owner.st_mode & 0o777) == (0, 0o700)
    full_bytes = dev1.records[(dev1.me, "carol", "notes")][1].size_bytes

    # one new commit → an incremental bundle far smaller than the full one
    await trio.to_thread.run_sync(lambda: _as(carol_pw, lambda: commit(src, "one more")))
    await wait_until(lambda: m2.state().seq == 2)
    inc = dev1.records[(dev1.me, "carol", "notes")][2]
    assert inc.kind == "incremental" and inc.size_bytes * 20 < full_bytes
    assert heads_and_tags(m2.path) == heads_and_tags(src / ".git")

    # force-push → a full bundle; the old tip stays under the backup namespace
    old_main = heads_and_tags(src / ".git")["refs/heads/main"]

    def rewrite() -> None:
        git(src, "reset", "-q", "--hard", "HEAD~20")
        commit(src, "rewritten history")

    await trio.to_thread.run_sync(lambda: _as(carol_pw, rewrite))
    await wait_until(lambda: m2.state().seq == 3)
    assert dev1.records[(dev1.me, "carol", "notes")][3].kind == "full"
    refs = m2.refs()
    assert refs["refs/gitback-backup/3/heads/main"] == old_main
    assert {r: o for r, o in refs.items() if not r.startswith("refs/gitback-backup/")} == (
        heads_and_tags(src / ".git")
    )
    git(m2.path, "fsck", "--full", "--no-dangling")

    # restore as carol: exactly the source's refs, fsck clean, owned by carol
    carol = dev1_people("carol")
    assert carol is not None
    dest = shared_dir / "carol" / "restored"
    restored = await trio.to_thread.run_sync(restore, m2, carol, dest, dev2.root / "staging")
    assert restored["head"] == "refs/heads/main"
    assert heads_and_tags(dest / ".git") == heads_and_tags(src / ".git")
    assert os.stat(dest / "src").st_uid == carol_pw.pw_uid
    git(dest, "fsck", "--full")
    assert not (dest / ".git" / "gitback-restore.bundle").exists()

    # hostile: a record for dev1's repo pushed by another envoy is refused
    base = (m2.refs(), m2.state().seq)
    stolen = dataclasses.replace(dev1.records[(dev1.me, "carol", "notes")][3], seq=9)
    _, bad = dev2.accept([stolen.to_wire()], web1.me, "web1")
    assert bad and "only from their seeder" in bad[0]
    # … a denied envoy (web1) cannot push at all, over the real peer channel
    peer = next(p for p in web1.node.peers() if p.uuid == dev2.node.identity.uuid)
    async with await web1.node.dial(peer) as conn:
        body = json.dumps({"records": [stolen.to_wire()]}).encode()
        resp = await conn.request("POST", RECORDS_PATH, body=body)
    assert resp.status == 403 and resp.error_code == "gitback_not_allowed"
    # … a bundle far over its record's declared size is never fetched
    liar = dataclasses.replace(dev1.records[(dev1.me, "carol", "notes")][3], seq=4, size_bytes=1000)
    rejected = dev2.stats.rejected
    dev2.accept([liar.to_wire()], dev1.me, "dev1")
    await wait_until(lambda: dev2.stats.rejected > rejected)
    assert "the record declares 1000" in dev2.stats.last_rejection
    # … and a stale record (lower seq) never overwrites
    stale = dev1.records[(dev1.me, "carol", "notes")][3]
    dev2.accept([dataclasses.replace(stale, seq=2, kind="full").to_wire()], dev1.me, "dev1")
    assert (m2.refs(), m2.state().seq) == base
    git(m2.path, "fsck", "--full", "--no-dangling")


def _as(user: pwd.struct_passwd, fn: Callable[[], object]) -> None:
    """Run ``fn`` in a forked child as ``user`` (carol commits to her own repo)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ["HOME"] = user.pw_dir
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
