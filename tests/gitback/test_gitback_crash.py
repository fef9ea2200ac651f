"""kill -9 of a receiver while it applies a bundle: the mirror is afterwards either the
old or the new state, never broken (``git fsck --full``), and the next apply works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from gitback_helpers import bundle, commit, generate_repo, git, heads_and_tags, record_for

from vigo_swarm.gitback.mirror import Mirror

pytestmark = pytest.mark.timeout(300)

CHILD = """
import json, sys
from pathlib import Path
from vigo_swarm.gitback.mirror import Mirror
from vigo_swarm.gitback.records import from_wire
rec = from_wire(json.loads(Path(sys.argv[2]).read_text()))
Mirror(Path(sys.argv[1])).apply(rec, Path(sys.argv[3]), 2.0)
"""


def kill_when(proc: subprocess.Popen[bytes], seen: callable) -> bool:  # type: ignore[valid-type]
    """SIGKILL the child's whole process group as soon as ``seen()`` holds (polling,
    no fixed sleep); False if the child finished first."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if seen():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    proc.wait()
    return False


def test_kill_9_mid_apply_leaves_old_or_new(tmp_path: Path) -> None:
    src = tmp_path / "src"
    generate_repo(src, 2000)
    seeder = uuid.uuid4()
    first = bundle(src, tmp_path / "1.bundle", "--branches", "--tags")
    mpath = tmp_path / "mirror.git"
    Mirror(mpath).apply(record_for(first, seeder=seeder, seq=1), first, 1.0)
    old = (Mirror(mpath).refs(), 1)
    # a rewrite: the next full bundle replaces main and keeps a backup of it
    git(src, "reset", "-q", "--hard", "HEAD~500")
    for i in range(30):
        commit(src, f"rewrite {i}", name=f"r{i}.txt")
    full = bundle(src, tmp_path / "2.bundle", "--branches", "--tags")
    rec = record_for(full, seeder=seeder, seq=2)
    (tmp_path / "rec.json").write_text(json.dumps(rec.to_wire()))
    new_heads = heads_and_tags(src / ".git")

    pack_dir = mpath / "objects" / "pack"

    def unpacking() -> bool:
        return any(n.startswith("tmp_") for n in os.listdir(pack_dir))

    def writing_refs() -> bool:
        return (mpath / "packed-refs.lock").exists()

    outcomes = []
    for point in (unpacking, writing_refs, unpacking, lambda: True):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(mpath), str(tmp_path / "rec.json"), str(full)],
            start_new_session=True,
            stderr=subprocess.DEVNULL,
        )
        killed = kill_when(proc, point)
        m = Mirror(mpath)
        now = (m.refs(), m.state().seq)
        heads = {r: o for r, o in now[0].items() if not r.startswith("refs/gitback-backup/")}
        assert now == old or (now[1] == 2 and heads == new_heads), (killed, now)
        git(mpath, "fsck", "--full", "--no-dangling")
        outcomes.append((killed, now[1]))
        if now[1] == 2:
            break
    # the next attempt (a restart) completes from whatever was left
    m = Mirror(mpath)
    if m.state().seq == 1:
        m.apply(rec, full, 3.0)
    heads = {r: o for r, o in m.refs().items() if not r.startswith("refs/gitback-backup/")}
    assert heads == new_heads and m.state().seq == 2
    assert m.refs()["refs/gitback-backup/2/heads/main"] == old[0]["refs/heads/main"]
    git(mpath, "fsck", "--full", "--no-dangling")
    assert any(killed for killed, _ in outcomes)  # at least one kill landed mid-apply
