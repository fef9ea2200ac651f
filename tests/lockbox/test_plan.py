"""What lockbox records and writes: local changes first (new, changed, deleted,
renamed), then what the view asks for — never over an unrecorded local edit."""

from __future__ import annotations

import uuid

from vigo_swarm.lockbox.plan import Deletion, Local, Stat, Upload, local_changes, remote_changes
from vigo_swarm.lockbox.records import Entry, Shown

S1 = Stat(10, 1000, 0o644, 11)
S2 = Stat(12, 2000, 0o644, 11)
S3 = Stat(5, 3000, 0o600, 33)


def shown(path: str, record: str) -> Shown:
    e = Entry(path, False, 0o644, 1, 1, str(uuid.UUID(int=1)), "a", 1, "ab" * 32, ())
    return Shown(path, record, e)


def test_new_changed_and_deleted_files_become_records() -> None:
    local = {"same": Local("r1", S1), "edited": Local("r2", S1), "gone": Local("r3", S3)}
    disk = {"same": S1, "edited": S2, "new": S3}
    plan = local_changes(local, disk)
    assert plan.uploads == (Upload("edited", S2, ("r2",)), Upload("new", S3, (), "r3"))
    # "new" has gone's identity (inode, size, mtime): a rename, its blob reused
    assert plan.deletions == (Deletion("gone", ("r3",)),)


def test_a_rename_reuses_the_blob_of_the_vanished_path() -> None:
    plan = local_changes({"old": Local("r1", S1)}, {"new": S1})
    assert plan.uploads == (Upload("new", S1, (), "r1"),)
    assert plan.deletions == (Deletion("old", ("r1",)),)


def test_nothing_changed_means_nothing_to_do() -> None:
    plan = local_changes({"a": Local("r1", S1)}, {"a": S1})
    assert plan.uploads == () and plan.deletions == ()


def test_remote_changes_write_what_differs_and_remove_what_is_gone() -> None:
    local = {"up-to-date": Local("r1", S1), "stale": Local("r2", S1), "removed": Local("r3", S3)}
    disk = {"up-to-date": S1, "stale": S1, "removed": S3}
    view = {
        "up-to-date": shown("up-to-date", "r1"),
        "stale": shown("stale", "r9"),
        "fresh": shown("fresh", "r7"),
    }
    plan = remote_changes(view, local, disk)
    assert [s.path for s in plan.write] == ["fresh", "stale"]
    assert plan.remove == ("removed",) and plan.blocked == ()


def test_a_file_touched_since_is_never_overwritten_or_removed() -> None:
    local = {"edited": Local("r2", S1), "edited-gone": Local("r3", S1)}
    disk = {"edited": S2, "edited-gone": S2, "untracked": S3}
    view = {"edited": shown("edited", "r9"), "untracked": shown("untracked", "r8")}
    plan = remote_changes(view, local, disk)
    assert plan.write == () and plan.remove == ()
    assert sorted(plan.blocked) == ["edited", "edited-gone", "untracked"]
