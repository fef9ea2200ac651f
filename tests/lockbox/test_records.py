"""The lockbox index: record wire format and its refusals, the grow-only set, and the
view every member computes (winners, conflict copies, deletions)."""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigo_swarm.lockbox import BadRecord, agefile, records
from vigo_swarm.lockbox.records import BlobRef, Entry
from vigo_swarm.puddle import PuddleKey

KEY = PuddleKey.generate()
A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))
REF = BlobRef("ab" * 32, 1 << 20, 1 << 20, "cd" * 32)


def entry(name: str, mtime_s: int, origin: str = A, *, deleted: bool = False, **kw: Any) -> Entry:
    return Entry(
        name=name,
        deleted=deleted,
        mode=0o644,
        size=0 if deleted else 10,
        mtime_ns=mtime_s * 10**9,
        origin=origin,
        origin_name="laptop" if origin == A else "desk.example.org",
        made_ns=mtime_s * 10**9,
        blob=None if deleted else REF.sha256,
        supersedes=kw.get("supersedes", ()),
    )


def seal(e: Entry, key: PuddleKey = KEY) -> records.Record:
    payload = records.entry_payload(e)
    out = io.BytesIO()
    agefile.encrypt(io.BytesIO(payload), len(payload), out, key.public)
    return records.make_record(None if e.deleted else REF, e.supersedes, out.getvalue())


def open_(rec: records.Record, key: PuddleKey = KEY) -> Entry:
    out = io.BytesIO()
    agefile.decrypt(io.BytesIO(rec.box), out, key.openssh_private())
    return records.entry_from_payload(out.getvalue(), rec)


def test_a_record_round_trips_and_its_id_is_computed_not_taken() -> None:
    e = entry("docs/a.txt", 100)
    rec = seal(e)
    wire = rec.to_wire()
    assert set(wire) == {"blob", "supersedes", "box"}
    again = records.record_from_wire(wire)
    assert again == rec and open_(again) == e
    assert b"docs/a.txt" not in base64.b64decode(wire["box"])  # the name is sealed


def test_the_box_hides_the_name_length_to_256_bytes() -> None:
    short = records.entry_payload(entry("a", 1))
    longer = records.entry_payload(entry("a" * 20, 1))
    much_longer = records.entry_payload(entry("a" * 300, 1))
    assert len(short) == len(longer) and len(short) % 256 == 0
    assert len(much_longer) % 256 == 0 and len(much_longer) > len(short)


def _bad_wires() -> list[tuple[str, Any]]:
    good = seal(entry("x", 1, supersedes=("11" * 32,))).to_wire()
    return [
        ("not a dict", []),
        ("extra key", {**good, "id": "00" * 32}),
        ("missing key", {k: v for k, v in good.items() if k != "box"}),
        ("bad blob", {**good, "blob": {"sha256": "zz"}}),
        ("blob hash", {**good, "blob": {**REF.to_wire(), "sha256": "AB" * 32}}),
        ("blob size", {**good, "blob": {**REF.to_wire(), "size_bytes": -1}}),
        ("chunk size", {**good, "blob": {**REF.to_wire(), "chunk_bytes": 3}}),
        ("supersedes type", {**good, "supersedes": "11" * 32}),
        ("supersedes order", {**good, "supersedes": ["22" * 32, "11" * 32]}),
        ("supersedes dup", {**good, "supersedes": ["11" * 32, "11" * 32]}),
        ("supersedes many", {**good, "supersedes": [f"{i:064x}" for i in range(65)]}),
        ("box base64", {**good, "box": "!!!"}),
        ("box not age", {**good, "box": base64.b64encode(b"hello").decode()}),
        ("box huge", {**good, "box": "A" * 40000}),
    ]


@pytest.mark.parametrize(("why", "wire"), _bad_wires(), ids=[w for w, _ in _bad_wires()])
def test_malformed_records_are_refused(why: str, wire: Any) -> None:
    with pytest.raises(BadRecord):
        records.record_from_wire(wire)


def test_a_clear_part_that_disagrees_with_the_box_is_refused() -> None:
    rec = seal(entry("x", 1, supersedes=("11" * 32,)))
    lying = records.make_record(rec.blob, ("22" * 32,), rec.box)  # other supersedes
    with pytest.raises(BadRecord, match="disagree"):
        open_(lying)
    no_blob = records.make_record(None, rec.supersedes, rec.box)
    with pytest.raises(BadRecord, match="disagree"):
        open_(no_blob)


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "../up", "a/../b", "a//b", "a\\b", "nul\0", ".vigo-lockbox-x"]
)
def test_a_box_naming_an_unsafe_path_is_refused(name: str) -> None:
    payload = records.entry_payload(entry("ok", 1)).replace(
        b'"name":"ok"', f'"name":{name!r}'.replace("'", '"').encode()
    )
    rec = records.make_record(REF, (), b"age-encryption.org/v1\n")
    with pytest.raises(BadRecord):
        records.entry_from_payload(payload, rec)


ids = st.sampled_from([f"{i:064x}" for i in range(6)])


@given(st.dictionaries(ids, st.lists(ids, max_size=3), max_size=6), st.randoms())
def test_merge_is_a_union_and_order_does_not_matter(items: dict[str, list[str]], rnd: Any) -> None:
    # an id is the hash of the record, so one id always comes with one content
    recs = [records.Record(None, tuple(sorted(set(s))), b"", i) for i, s in items.items()]
    rnd.shuffle(recs)
    half = len(recs) // 2
    left = records.merge({}, recs[:half])
    right = records.merge({}, recs[half:])
    ab, ba = records.merge(left, right.values()), records.merge(right, left.values())
    assert ab.keys() == ba.keys() == {r.id for r in recs}
    assert records.merge(ab, ab.values()) == ab
    assert records.live_ids(ab) == records.live_ids(ba)


def test_live_records_are_those_nobody_supersedes() -> None:
    r1 = records.Record(None, (), b"", "01" * 32)
    r2 = records.Record(None, (r1.id,), b"", "02" * 32)
    r3 = records.Record(None, (r1.id,), b"", "03" * 32)
    assert records.live_ids({r.id: r for r in (r1, r2, r3)}) == {r2.id, r3.id}


def test_the_later_edit_holds_the_name_and_the_other_becomes_a_conflict_copy() -> None:
    shown = records.view(
        {"r1": entry("notes.txt", 1_700_000_000, A), "r2": entry("notes.txt", 1_700_000_100, B)}
    )
    assert shown["notes.txt"].record == "r2"
    copy = shown["notes.sync-conflict-20231114-221320-laptop.txt"]
    assert copy.record == "r1" and copy.entry.name == "notes.txt"
    assert len(shown) == 2


def test_a_deletion_against_an_edit_keeps_the_edit_as_a_copy() -> None:
    later_delete = records.view(
        {"e": entry("a/b.md", 10, A), "d": entry("a/b.md", 20, B, deleted=True)}
    )
    assert list(later_delete) == ["a/b.sync-conflict-19700101-000010-laptop.md"]
    later_edit = records.view(
        {"e": entry("a/b.md", 30, A), "d": entry("a/b.md", 20, B, deleted=True)}
    )
    assert list(later_edit) == ["a/b.md"]


def test_conflict_names_follow_syncthing() -> None:
    e = entry("x", 0, B)
    assert records.conflict_name("Makefile", e) == "Makefile.sync-conflict-19700101-000000-desk"
    assert records.conflict_name("d/a.tar.gz", e) == "d/a.tar.sync-conflict-19700101-000000-desk.gz"
    assert records.conflict_name(".bashrc", e) == ".bashrc.sync-conflict-19700101-000000-desk"
    long = records.conflict_name("n" * 250 + ".txt", e)
    assert len(long.encode()) <= 255 and long.endswith("-desk.txt")


def test_two_copies_on_one_name_are_told_apart_by_record_id() -> None:
    same = {
        "r1" + "0" * 62: entry("f.txt", 5, A),
        "r2" + "0" * 62: replace(entry("f.txt", 5, A), made_ns=6),
        "r3" + "0" * 62: entry("f.txt", 9, B),
    }
    shown = records.view(same)
    assert len(shown) == 3 and shown["f.txt"].record.startswith("r3")
    assert any(p.endswith(f"-{'r1' + '0' * 6}.txt") or p.endswith("-r2000000.txt") for p in shown)


def test_the_view_is_the_same_whatever_order_entries_arrive_in() -> None:
    es = {f"{i:064x}": entry("same.txt", 10 + i % 3, A if i % 2 else B) for i in range(6)}
    forward = records.view(es)
    backward = records.view(dict(reversed(list(es.items()))))
    assert forward == backward
