"""A mirror with real git: full and incremental bundles, rewrites with backups, and every
hostile bundle refused with the mirror unchanged."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from gitback_helpers import bundle, commit, generate_repo, git, heads_and_tags, record_for

from vigo_swarm.gitback.mirror import Mirror
from vigo_swarm.gitback.records import RecordRejected

SEEDER = uuid.uuid4()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    repo = tmp_path / "src"
    generate_repo(repo, 200, tag_every=50)
    git(repo, "branch", "topic", "HEAD~10")
    return repo


def snapshot(m: Mirror) -> tuple[dict[str, str], int]:
    return m.refs(), m.state().seq


def fsck_clean(git_dir: Path) -> None:
    git(git_dir, "fsck", "--full", "--strict", "--no-dangling")


def test_full_then_incremental_then_rewrite(src: Path, tmp_path: Path) -> None:
    m = Mirror(tmp_path / "m" / "notes.git")
    full = bundle(src, tmp_path / "1.bundle", "--branches", "--tags")
    done = m.apply(record_for(full, seeder=SEEDER, seq=1), full, 10.0)
    assert done.kind == "full" and "refs/heads/main" in done.moved
    assert heads_and_tags(m.path) == heads_and_tags(src / ".git")
    assert m.state().seq == 1 and (m.path / "hooks").exists() is False  # no template

    old = heads_and_tags(src / ".git")
    commit(src, "one more")
    inc = bundle(
        src, tmp_path / "2.bundle", "--branches", "--tags", *[f"^{o}" for o in old.values()]
    )
    rec = record_for(inc, seeder=SEEDER, seq=2, kind="incremental", base_seq=1,
                     tips=heads_and_tags(src / ".git"))  # fmt: skip
    assert inc.stat().st_size < full.stat().st_size / 10
    m.apply(rec, inc, 11.0)
    assert heads_and_tags(m.path) == heads_and_tags(src / ".git")

    # force-push: main rewritten, topic deleted; the overwritten tips stay as backups
    before = heads_and_tags(m.path)
    git(src, "reset", "-q", "--hard", "HEAD~5")
    commit(src, "rewritten")
    git(src, "branch", "-D", "topic")
    rewrite = bundle(src, tmp_path / "3.bundle", "--branches", "--tags")
    done = m.apply(record_for(rewrite, seeder=SEEDER, seq=3), rewrite, 12.0)
    assert heads_and_tags(m.path) == heads_and_tags(src / ".git")
    backups = {r: o for r, o in m.refs().items() if r.startswith("refs/gitback-backup/")}
    assert backups == {
        "refs/gitback-backup/3/heads/main": before["refs/heads/main"],
        "refs/gitback-backup/3/heads/topic": before["refs/heads/topic"],
    }
    assert set(done.backed_up) == set(backups)
    fsck_clean(m.path)

    # restore: a plain clone from the mirror path has exactly the source's refs
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--mirror", str(m.path), str(clone))
    cloned = heads_and_tags(clone)
    assert cloned == heads_and_tags(src / ".git")
    fsck_clean(clone)


def test_hostile_bundles_leave_the_mirror_unchanged(src: Path, tmp_path: Path) -> None:
    m = Mirror(tmp_path / "m" / "notes.git")
    full = bundle(src, tmp_path / "1.bundle", "--branches", "--tags")
    m.apply(record_for(full, seeder=SEEDER, seq=5), full, 1.0)
    base = snapshot(m)
    tips = heads_and_tags(src / ".git")

    # missing prerequisites: built on a commit the mirror never saw
    other = tmp_path / "other"
    generate_repo(other, 5)
    first = commit(other, "a commit only this other repo has")
    commit(other, "x")
    orphan = bundle(other, tmp_path / "orphan.bundle", "main", f"^{first}")
    rec = record_for(orphan, seeder=SEEDER, seq=6, kind="incremental", base_seq=5,
                     tips={**tips, **heads_and_tags(other / ".git")})  # fmt: skip
    with pytest.raises(RecordRejected, match="does not verify"):
        m.apply(rec, orphan, 2.0)
    assert snapshot(m) == base

    # refs outside heads/tags
    git(src, "update-ref", "refs/notes/evil", "HEAD")
    evil = bundle(src, tmp_path / "evil.bundle", "refs/notes/evil", "--branches")
    rec = record_for(evil, seeder=SEEDER, seq=6, tips=tips)
    with pytest.raises(RecordRejected, match="outside refs/heads"):
        m.apply(rec, evil, 2.0)
    assert snapshot(m) == base

    # stale: a lower (or equal) sequence never overwrites
    commit(src, "newer")
    newer = bundle(src, tmp_path / "newer.bundle", "--branches", "--tags")
    for seq in (5, 4):
        with pytest.raises(RecordRejected, match="stale"):
            m.apply(record_for(newer, seeder=SEEDER, seq=seq), newer, 2.0)
    assert snapshot(m) == base

    # the record says other tips than the bundle carries
    lying = record_for(newer, seeder=SEEDER, seq=9, tips=tips)
    with pytest.raises(RecordRejected, match="not the record's tip"):
        m.apply(lying, newer, 2.0)
    # an incremental record that would rewrite history
    inc = bundle(src, tmp_path / "i.bundle", "--branches", "--tags", f"^{tips['refs/heads/main']}")
    moved = dict(record_for(inc, seeder=SEEDER, seq=6).tips)
    rewind = tips | moved | {"refs/heads/topic": git(src, "rev-parse", "HEAD~30").strip()}
    rec = record_for(inc, seeder=SEEDER, seq=6, kind="incremental", base_seq=5, tips=rewind)
    with pytest.raises(RecordRejected, match="may not rewrite or delete refs/heads/topic"):
        m.apply(rec, inc, 2.0)
    assert snapshot(m) == base
    # an incremental that skips a sequence number waits
    rec = record_for(inc, seeder=SEEDER, seq=8, kind="incremental", base_seq=7,
                     tips=heads_and_tags(src / ".git"))  # fmt: skip
    with pytest.raises(RecordRejected, match="extends 7"):
        m.apply(rec, inc, 2.0)
    # not a bundle at all
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"PACK" + b"\0" * 100)
    with pytest.raises(RecordRejected, match="not a git bundle"):
        m.apply(record_for(full, seeder=SEEDER, seq=7), junk, 2.0)
    assert snapshot(m) == base
    fsck_clean(m.path)
    shutil.rmtree(other)
