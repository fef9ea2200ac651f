"""Index entries: the strict wire codec and the conflict decision."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vigo_swarm.longdrawer import (
    Action,
    BadEntry,
    Entry,
    Kind,
    VersionVector,
    decide,
    from_wire,
    is_conflict_copy,
    to_wire,
)

A, B, C = (str(uuid.UUID(int=i + 1)) for i in range(3))


def file_entry(path: str, data: bytes, vv: dict[str, int], by: str, mtime: int = 1) -> Entry:
    sha = hashlib.sha256(data).hexdigest()
    return Entry(
        path,
        Kind.FILE,
        VersionVector.of(vv),
        by,
        mode=0o644,
        mtime_ns=mtime,
        size=len(data),
        sha256=sha,
        chunk_bytes=1 << 20,
        chunks=(bytes.fromhex(sha),) if data else (),
    )


def test_wire_round_trip_for_each_kind() -> None:
    f = file_entry("a/b.txt", b"hello", {A: 2, B: 1}, A)
    d = Entry("a", Kind.DIR, VersionVector.of({A: 1}), A, mode=0o755, mtime_ns=5)
    s = Entry("l", Kind.SYMLINK, VersionVector.of({B: 1}), B, mode=0o777, target="../x")
    t = f.tombstone(B, 9)
    for e in (f, d, s, t, file_entry("empty", b"", {C: 1}, C)):
        assert from_wire(to_wire(e)) == e


def good_wire() -> dict[str, Any]:
    return to_wire(file_entry("a/b.txt", b"hello", {A: 2}, A))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"path": "../../etc/passwd"}, "'..'"),
        ({"path": "/etc/passwd"}, "absolute"),
        ({"path": "a\0b"}, "NUL"),
        ({"kind": "fifo"}, "kind"),
        ({"deleted": "no"}, "deleted"),
        ({"vv": {}}, "vv must be"),
        ({"vv": {A: -1}}, "out of range"),
        ({"vv": {"bob": 1}}, "UUID"),
        ({"by": "x"}, "UUID"),
        ({"mode": 0o4755}, "mode"),
        ({"sha256": "ab"}, "sha256"),
        ({"chunks": ["zz"]}, "chunks"),
        ({"size": 3 << 20}, "inconsistent chunk list"),
        ({"evil": 1}, "unexpected fields"),
        ({"target": "x"}, "unexpected fields"),
    ],
)
def test_bad_entries_are_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadEntry, match=reason):
        from_wire(good_wire() | change)


def test_bad_symlink_targets_and_non_objects_are_refused() -> None:
    link = to_wire(Entry("l", Kind.SYMLINK, VersionVector.of({A: 1}), A, target="t"))
    for target in ("", "a\0b", "x" * 5000, 7):
        with pytest.raises(BadEntry, match="symlink target"):
            from_wire(link | {"target": target})
    with pytest.raises(BadEntry, match="object"):
        from_wire([1])


def test_newer_is_taken_older_and_equal_are_skipped() -> None:
    old = file_entry("f", b"1", {A: 1}, A)
    new = file_entry("f", b"2", {A: 2}, A)
    assert decide(None, old).action is Action.TAKE
    assert decide(old, new).action is Action.TAKE
    assert decide(new, old).action is Action.SKIP
    assert decide(new, new).action is Action.SKIP


def test_concurrent_same_content_merges_without_conflict() -> None:
    a = file_entry("f", b"same", {A: 1}, A)
    b = file_entry("f", b"same", {B: 1}, B, mtime=7)
    d = decide(a, b)
    assert d.action is Action.MERGE and not d.conflict
    assert d.entry is not None and d.entry.vv == VersionVector.of({A: 1, B: 1})


def test_concurrent_edits_keep_both_versions() -> None:
    base = {A: 1}
    ours = file_entry("doc.txt", b"ours", base | {B: 2}, B, mtime=10)
    theirs = file_entry("doc.txt", b"theirs", base | {C: 2}, C, mtime=20)
    here = decide(ours, theirs)  # theirs is later: it wins, ours becomes a copy
    assert here.action is Action.TAKE and here.conflict
    assert here.copy_to.startswith("doc.sync-conflict-") and here.copy_to.endswith(".txt")
    there = decide(theirs, ours)  # the other side keeps its own
    assert there.action is Action.KEEP_LOCAL and there.copy_to == ""
    assert there.keep_remote_as == here.copy_to  # both sides keep it under one name
    assert here.entry is not None and there.entry is not None
    assert here.entry.vv == there.entry.vv and here.entry.same_content(there.entry)


def test_delete_vs_edit_keeps_the_edit_on_both_sides() -> None:
    edit = file_entry("f", b"edited", {A: 1, B: 1}, B, mtime=1)
    gone = file_entry("f", b"x", {A: 1}, A).tombstone(C, 99)
    assert decide(gone, edit).action is Action.TAKE
    kept = decide(edit, gone)
    assert kept.action is Action.KEEP_LOCAL and kept.entry is not None
    assert kept.keep_remote_as == ""  # a deletion leaves no copy
    assert not kept.entry.deleted and kept.entry.vv.dominates(gone.vv)


def test_conflict_copies_are_not_copied_again() -> None:
    path = "doc.sync-conflict-20240102-030405-00000000.txt"
    assert is_conflict_copy(path)
    ours = file_entry(path, b"ours", {B: 1}, B, mtime=1)
    theirs = file_entry(path, b"theirs", {C: 1}, C, mtime=2)
    d = decide(ours, theirs)
    assert d.action is Action.TAKE and d.conflict and d.copy_to == ""
    assert decide(theirs, ours).keep_remote_as == ""


def test_a_directory_is_not_replaced_by_a_file_in_a_conflict() -> None:
    folder = Entry("x", Kind.DIR, VersionVector.of({A: 1}), A, mode=0o755, mtime_ns=1)
    newer_file = file_entry("x", b"f", {B: 1}, B, mtime=100)
    assert decide(folder, newer_file).action is Action.KEEP_LOCAL
    d = decide(newer_file, folder)
    assert d.action is Action.TAKE and d.copy_to.startswith("x.sync-conflict-")


entries = st.builds(
    lambda data, vv, by, mtime, deleted: (
        file_entry("p", data, vv, by, mtime).tombstone(by, mtime)
        if deleted
        else file_entry("p", data, vv, by, mtime)
    ),
    st.sampled_from([b"1", b"2", b"3"]),
    st.dictionaries(st.sampled_from([A, B, C]), st.integers(1, 3), min_size=1),
    st.sampled_from([A, B, C]),
    st.integers(0, 3),
    st.booleans(),
)


def _after(local: Entry, remote: Entry) -> Entry:
    d = decide(local, remote)
    return local if d.entry is None else d.entry


@given(entries, entries)
def test_both_sides_converge_on_one_content(a: Entry, b: Entry) -> None:
    assume(a.vv != b.vv or a.same_content(b))  # one vector names one version
    x, y = _after(a, b), _after(b, a)
    assert x.same_content(y)
    if not a.vv.dominates(b.vv) and not b.vv.dominates(a.vv):
        assert x.vv == y.vv == a.vv.merge(b.vv)


def test_tombstone_is_a_new_version() -> None:
    f = file_entry("f", b"1", {A: 1}, A)
    t = f.tombstone(B, 5)
    assert t.deleted and t.vv.compare(f.vv).value == "after" and t.by == B
    assert replace(t, seq=3).same_content(t)
