"""Gitback records, pure: the wire form, bundle headers, sequence and ref rules, and
``.gitback.yaml``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from vigo_swarm.gitback.records import (
    Record,
    RecordRejected,
    check_bundle,
    choose_kind,
    from_wire,
    keep_from,
    next_to_apply,
    parse_bundle_header,
    plan_refs,
    render_packed_refs,
)
from vigo_swarm.gitback.repoconfig import RepoConfig, RepoConfigError, parse_repo_config

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
SEEDER = uuid.UUID("0b7c5d1e-0000-4000-8000-000000000001")


def wire(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "seeder": str(SEEDER),
        "person": "carol",
        "project": "notes",
        "seq": 2,
        "kind": "incremental",
        "base_seq": 1,
        "blob": "e" * 64,
        "size_bytes": 100,
        "chunk_bytes": 65536,
        "chunks_digest": "f" * 64,
        "tips": {"refs/heads/main": B, "refs/tags/v1": A},
        "head": "refs/heads/main",
        "prerequisites": [A],
        "created_unix": 5.0,
    }
    return base | over


def rec(seq: int, kind: str = "incremental", base: int | None = None, **over: Any) -> Record:
    fields = {"prerequisites": [] if kind == "full" else [A]}
    base_seq = 0 if kind == "full" else (seq - 1 if base is None else base)
    return from_wire(wire(seq=seq, kind=kind, base_seq=base_seq, **(fields | over)))


def test_wire_round_trip() -> None:
    r = from_wire(wire())
    assert from_wire(r.to_wire()) == r and r.repo == (str(SEEDER), "carol", "notes")


@pytest.mark.parametrize(
    ("over", "problem"),
    [
        ({"extra": 1}, "unknown"),
        ({"seeder": "dev1"}, "seeder is not a UUID"),
        ({"person": "Carol"}, "login name"),
        ({"person": "-rf"}, "login name"),
        ({"project": "../etc"}, "project"),
        ({"project": ".git"}, "project"),
        ({"project": "a/b"}, "project"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": 2**60}, "seq"),
        ({"kind": "delta"}, "kind"),
        ({"base_seq": 2}, "base_seq < seq"),
        ({"blob": "E" * 64}, "blob"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"size_bytes": 2**41}, "size_bytes"),
        ({"chunk_bytes": 2**30}, "chunk_bytes"),
        ({"tips": {"refs/notes/x": A}}, "outside refs/heads"),
        ({"tips": {"refs/remotes/origin/main": A}}, "outside refs/heads"),
        ({"tips": {"refs/heads/../../x": A}}, "not a valid git ref"),
        ({"tips": {"refs/heads/a.lock": A}}, "not a valid git ref"),
        ({"tips": {"refs/heads/a b": A}}, "not a valid git ref"),
        ({"tips": {"refs/heads/x": "zz"}}, "object id"),
        ({"tips": {}}, "at least one ref"),
        ({"head": "refs/tags/v1"}, "head"),
        ({"prerequisites": ["nope"]}, "object id"),
        ({"created_unix": -1}, "created_unix"),
        ({"kind": "full", "base_seq": 0}, "no prerequisites"),
    ],
)
def test_bad_records_are_refused(over: dict[str, Any], problem: str) -> None:
    with pytest.raises(RecordRejected, match=problem):
        from_wire(wire(**over))


def test_missing_field_and_non_object() -> None:
    w = wire()
    del w["tips"]
    with pytest.raises(RecordRejected, match="missing"):
        from_wire(w)
    with pytest.raises(RecordRejected):
        from_wire([1])


def header(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n\n").encode() + b"PACK\0\0\0\2"


def test_bundle_header_parsing_and_checks() -> None:
    h = parse_bundle_header(header("# v2 git bundle", f"-{A} base", f"{B} refs/heads/main"))
    assert h.prerequisites == {A} and h.refs == {"refs/heads/main": B}
    check_bundle(h, from_wire(wire()))  # a subset of the tips: fine for incremental
    v3 = header("# v3 git bundle", "@object-format=sha1", f"{B} refs/heads/main")
    assert parse_bundle_header(v3).version == 3
    for bad, problem in (
        (b"PACK", "no header end"),
        (header("# v9 git bundle"), "signature"),
        (header("# v2 git bundle", "@filter=blob:none"), "capability"),
        (header("# v2 git bundle", "nonsense"), "malformed"),
        (header("# v2 git bundle", f"-{'x' * 40}"), "object id"),
    ):
        with pytest.raises(RecordRejected, match=problem):
            parse_bundle_header(bad)
    cases = [
        (header("# v2 git bundle", f"-{A}", f"{B} refs/notes/x"), "outside refs/heads"),
        (header("# v2 git bundle", f"-{A}", f"{C} refs/heads/main"), "not the record's tip"),
        (header("# v2 git bundle", f"-{C}", f"{B} refs/heads/main"), "prerequisites"),
    ]
    for raw, problem in cases:
        with pytest.raises(RecordRejected, match=problem):
            check_bundle(parse_bundle_header(raw), from_wire(wire()))
    full = rec(3, "full")
    with pytest.raises(RecordRejected, match="every ref"):
        check_bundle(parse_bundle_header(header("# v2 git bundle", f"{B} refs/heads/main")), full)


def test_sequence_rules() -> None:
    chain = [rec(1, "full"), rec(2), rec(3), rec(4)]
    assert next_to_apply(chain, 0) == chain[0]
    assert next_to_apply(chain, 1) == chain[1] and next_to_apply(chain, 3) == chain[3]
    assert next_to_apply(chain, 4) is None  # nothing newer
    assert next_to_apply(chain, 9) is None  # a stale record never applies
    gap = [rec(1, "full"), rec(3)]
    assert next_to_apply(gap, 1) is None  # 2 is missing: wait for it
    rewritten = [*chain, rec(5, "full"), rec(6)]
    assert next_to_apply(rewritten, 2) == rewritten[4]  # skip to the newer full one
    assert next_to_apply(rewritten, 5) == rewritten[5]
    assert keep_from(rewritten) == 5 and keep_from([rec(2)]) == 0


def test_ref_plans() -> None:
    current = {"refs/heads/main": A, "refs/heads/old": C, "refs/gitback-backup/1/heads/x": D}
    inc = from_wire(wire(tips={"refs/heads/main": B, "refs/heads/old": C}))
    plan = plan_refs(current, inc, {"refs/heads/main": True})
    assert plan.refs["refs/heads/main"] == B and plan.moved == ("refs/heads/main",)
    assert plan.refs["refs/gitback-backup/1/heads/x"] == D  # older backups stay
    with pytest.raises(RecordRejected, match="may not rewrite"):
        plan_refs(current, inc, {"refs/heads/main": False})
    with pytest.raises(RecordRejected, match="delete refs/heads/old"):
        plan_refs(current, from_wire(wire(tips={"refs/heads/main": B})), {"refs/heads/main": True})
    full = from_wire(
        wire(seq=7, kind="full", base_seq=0, prerequisites=[], tips={"refs/heads/main": B})
    )
    plan = plan_refs(current, full, {"refs/heads/main": False})
    assert plan.refs == {
        "refs/heads/main": B,
        "refs/gitback-backup/7/heads/main": A,
        "refs/gitback-backup/7/heads/old": C,
        "refs/gitback-backup/1/heads/x": D,
    }
    assert render_packed_refs({"refs/heads/b": B, "refs/heads/a": A}).splitlines()[1:] == [
        f"{A} refs/heads/a".encode(),
        f"{B} refs/heads/b".encode(),
    ]


def test_seeder_chooses_full_or_incremental() -> None:
    last = {"refs/heads/main": A, "refs/tags/v1": C}
    grown = {"refs/heads/main": B, "refs/tags/v1": C}
    assert choose_kind(None, grown, {}, 0, 32) == "full"  # first time
    assert choose_kind(last, grown, {"refs/heads/main": True}, 3, 32) == "incremental"
    assert choose_kind(last, grown, {"refs/heads/main": False}, 3, 32) == "full"  # force-push
    assert choose_kind(last, {"refs/heads/main": A}, {}, 3, 32) == "full"  # a tag deleted
    assert choose_kind(last, grown, {"refs/heads/main": True}, 32, 32) == "full"  # chain cap
    assert choose_kind(last, last | {"refs/heads/new": A}, {}, 1, 32) == "incremental"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"", RepoConfig()),
        (b"# nothing\n", RepoConfig()),
        (b"enabled: false\n", RepoConfig(enabled=False)),
        (b"max_bundle_bytes: 1000\n", RepoConfig(max_bundle_bytes=1000)),
    ],
)
def test_gitback_yaml(raw: bytes, want: RepoConfig) -> None:
    assert parse_repo_config(raw) == want


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"enable: true\n", "unknown key 'enable'"),
        (b"enabled: yes please\n", "true or false"),
        (b"max_bundle_bytes: 0\n", "max_bundle_bytes"),
        (b"max_bundle_bytes: 1.5\n", "whole number"),
        (b"- a\n- b\n", "mapping"),
        (b"a: &x 1\nb: *x\n", "anchors"),
        (b"enabled: !!python/object:os.system true\n", "tags"),
        (b"enabled: true\nenabled: false\n", "appears twice"),
        (b"enabled: true\n---\nenabled: true\n", "more than one"),
        (b"\xff\xfe", "UTF-8"),
        (b"x" * 20000, "over"),
        (b"enabled: [\n", "not valid YAML"),
    ],
)
def test_bad_gitback_yaml(raw: bytes, problem: str) -> None:
    with pytest.raises(RepoConfigError, match=problem):
        parse_repo_config(raw)
