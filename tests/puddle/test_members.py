"""The signed member list: strict wire form, signatures, merge decisions."""

from __future__ import annotations

import copy
import uuid

import pytest

from vigo_swarm.puddle import BadMemberList, PuddleKey, add_member, members_from_wire, sign_members
from vigo_swarm.puddle.members import Merge, compare, resolve

KEY = PuddleKey(b"\x07" * 32)
A, B, C, D = (uuid.UUID(int=0xABC0 + i) for i in (1, 2, 3, 4))


def test_sign_and_verify_round_trip() -> None:
    m = sign_members(KEY, 1, [B, A, A])
    assert m.members == (A, B)
    assert members_from_wire(m.to_wire()) == m
    assert members_from_wire(m.to_wire(), puddle=KEY.public) == m


def test_add_member_bumps_the_version_once() -> None:
    m1 = sign_members(KEY, 1, [A])
    m2 = add_member(KEY, m1, B)
    assert m2.version == 2 and m2.members == (A, B)
    assert add_member(KEY, m2, B) is m2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: w.update(version=w["version"] + 1), "signature"),
        (lambda w: w["members"].append(str(D)), "signature"),
        (lambda w: w.update(sig="00" * 64), "signature"),
        (lambda w: w.update(members=list(reversed(w["members"]))), "ascending"),
        (lambda w: w.update(members=[w["members"][0].upper()]), "canonical UUID"),
        (lambda w: w.update(members=[]), "1..256"),
        (lambda w: w.update(version=0), "positive"),
        (lambda w: w.update(version=True), "positive"),
        (lambda w: w.update(sig="zz" * 64), "not hex"),
        (lambda w: w.update(puddle="ab"), "64 hex"),
        (lambda w: w.update(extra=1), "keys"),
        (lambda w: w.pop("sig"), "keys"),
    ],
)
def test_malformed_or_tampered_lists_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    wire = copy.deepcopy(sign_members(KEY, 3, [A, B]).to_wire())
    mutate(wire)
    with pytest.raises(BadMemberList, match=message):
        members_from_wire(wire)


def test_a_list_of_another_puddle_is_refused_when_pinned() -> None:
    other = sign_members(PuddleKey.generate(), 1, [A])
    with pytest.raises(BadMemberList, match="another puddle"):
        members_from_wire(other.to_wire(), puddle=KEY.public)


def test_merge_decisions() -> None:
    v1 = sign_members(KEY, 1, [A])
    v2 = sign_members(KEY, 2, [A, B])
    v2c = sign_members(KEY, 2, [A, C])
    assert compare(v1, v2) is Merge.TAKE
    assert compare(v2, v1) is Merge.KEEP
    assert compare(v2, v2) is Merge.KEEP
    assert compare(v2, v2c) is Merge.CONFLICT
    # with the key: the union at the next version
    union = resolve(v2, v2c, KEY)
    assert union.version == 3 and union.members == (A, B, C)
    # without it: everyone picks the same one
    assert resolve(v2, v2c, None) == resolve(v2c, v2, None)
