"""The manifest CRDT: merge laws (Hypothesis), LWW winner, tombstones, sync, version."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from manifest_helpers import (
    AUTHORITIES,
    DAY_MS,
    ENVOY_ID,
    ENVOY_KEY,
    NOW_MS,
    SEEDER_ID,
    SERVER_KEY,
    fields,
    fresh,
    records,
    signed,
    state,
    unique_stamps,
)

from vigo_swarm.hlc import MAX_STAMP, pack, wall_ms_of
from vigo_swarm.manifest import (
    BadSignature,
    FarFutureRecord,
    MalformedSummary,
    Manifest,
    Outcome,
    Record,
    UnknownSigner,
    sign,
    summary_from_wire,
    summary_to_wire,
    tombstone_fields,
)


def applied(rs: list[Record]) -> Manifest:
    m = fresh()
    for r in rs:
        m.merge(r, NOW_MS)
    return m


def join(a: Manifest, b: Manifest) -> Manifest:
    """State-based merge through the sync exchange: a fresh manifest gets a's records,
    then what b says a lacks."""
    out = fresh()
    for r in a.records():
        out.merge(r, NOW_MS)
    for r in b.missing_for(out.summary()):
        out.merge(r, NOW_MS)
    return out


def lww_winner(rs: list[Record]) -> dict[str, tuple[int, str]]:
    best: dict[str, tuple[int, str]] = {}
    for r in rs:
        best[r.key] = max(best.get(r.key, (0, "")), (r.hlc, r.origin))
    return best


# ------------------------------------------------------------------ the laws


@given(st.lists(records(), max_size=12), st.data())
def test_merge_is_commutative_and_idempotent(rs: list[Record], data: st.DataObject) -> None:
    reference = applied(rs)
    shuffled = data.draw(st.permutations(rs))
    dupes = data.draw(st.lists(st.sampled_from(rs), max_size=8)) if rs else []
    again = applied([*shuffled, *dupes, *reversed(shuffled)])
    assert state(again) == state(reference)
    assert reference.summary() == lww_winner(rs)


@given(
    st.lists(records(), max_size=8),
    st.lists(records(), max_size=8),
    st.lists(records(), max_size=8),
)
def test_join_is_associative_commutative_idempotent(
    xs: list[Record], ys: list[Record], zs: list[Record]
) -> None:
    everything = unique_stamps([*xs, *ys, *zs])
    xs, ys, zs = ([r for r in everything if r in part] for part in (xs, ys, zs))
    a, b, c = applied(xs), applied(ys), applied(zs)
    assert state(join(join(a, b), c)) == state(join(a, join(b, c)))
    assert state(join(a, b)) == state(join(b, a))
    assert state(join(a, a)) == state(a)
    assert state(join(join(a, b), c)) == state(applied(everything))


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from(["server", SEEDER_ID])),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    st.data(),
)
def test_every_envoy_picks_the_same_winner(
    stamps: list[tuple[int, int, str]], data: st.DataObject
) -> None:
    """Concurrent records for one key (different origins and clocks): three envoys
    that see them in three orders hold the same record, the greatest (hlc, origin)."""
    rs = [
        signed(hlc=pack(NOW_MS - 10 + ms, counter), origin=origin, size_bytes=i)
        for i, (ms, counter, origin) in enumerate(stamps)
    ]
    envoys = [applied(data.draw(st.permutations(rs))) for _ in range(3)]
    winner = max(rs, key=lambda r: (r.hlc, r.origin))
    for envoy in envoys:
        assert envoy.get("filecast/motd") == winner
        assert envoy.version == envoys[0].version


def test_equal_stamps_tie_break_on_origin() -> None:
    stamp = pack(NOW_MS - 5, 0)
    a, b = signed(hlc=stamp, origin="server"), signed(hlc=stamp, origin=SEEDER_ID)
    assert applied([a, b]).get(a.key) == applied([b, a]).get(a.key) == a  # "server" > "5f0c…"


def test_a_reused_stamp_still_has_one_winner() -> None:
    """A signer that reused a stamp for two different records (a bug: it must persist
    its HLC) still cannot make envoys disagree: the canonical bytes break the tie."""
    stamp = pack(NOW_MS - 5, 0)
    a, b = signed(hlc=stamp, size_bytes=1), signed(hlc=stamp, size_bytes=2)
    assert applied([a, b]).get(a.key) == applied([b, a]).get(a.key)
    assert state(applied([a, b])) == state(applied([b, a, a, b]))


@given(st.integers(0, 1000), st.integers(1, 1000), st.data())
def test_tombstone_beats_older_adds_and_stale_readd_cannot_resurrect(
    add_age_ms: int, gap_ms: int, data: st.DataObject
) -> None:
    add_hlc = pack(NOW_MS - add_age_ms - gap_ms, 0)
    tomb_hlc = pack(NOW_MS - add_age_ms, 0)
    add = signed(hlc=add_hlc, origin=data.draw(st.sampled_from(["server", SEEDER_ID])))
    tomb = sign(tombstone_fields(add.key, hlc=tomb_hlc, origin="server"), SERVER_KEY)
    for order in ([add, tomb], [tomb, add]):
        m = applied(order)
        assert m.get(add.key) == tomb
        assert m.live_records() == []
        # a stale peer offers its old add again, any number of times: still revoked
        assert m.merge(add, NOW_MS).outcome is Outcome.STALE
        assert m.get(add.key) == tomb
    # only a newer add (a re-distribution) replaces the tombstone
    newer = signed(hlc=tomb_hlc + 1, origin="server")
    m = applied([add, tomb, newer])
    assert m.get(add.key) == newer


@given(st.integers(60_001, 10**9), st.integers(0, 60_000))
def test_far_future_record_refused(ahead_ms: int, ok_ahead_ms: int) -> None:
    m = fresh(max_drift_ms=60_000)
    with pytest.raises(FarFutureRecord, match=f"{ahead_ms} ms ahead"):
        m.merge(signed(hlc=pack(NOW_MS + ahead_ms, 0)), NOW_MS)
    assert len(m) == 0 and m.version == 0
    assert m.merge(signed(hlc=pack(NOW_MS + ok_ahead_ms, 0)), NOW_MS).accepted


# ------------------------------------------------------------------ refusals change nothing


def test_unauthorized_records_are_refused_and_change_nothing() -> None:
    good = signed()
    m = applied([good])
    before = state(m)
    newer = fields(hlc=good.hlc + 1, origin=ENVOY_ID)
    with pytest.raises(UnknownSigner):
        m.merge(sign(newer, ENVOY_KEY), NOW_MS)
    revoke = tombstone_fields(good.key, hlc=good.hlc + 1, origin=ENVOY_ID)
    with pytest.raises(UnknownSigner):
        m.merge(sign(revoke, ENVOY_KEY), NOW_MS)
    forged = dataclasses.replace(signed(hlc=good.hlc + 1), targets=("etc/shadow",))
    with pytest.raises(BadSignature):
        m.merge(forged, NOW_MS)
    assert state(m) == before


def test_outcomes_and_revert() -> None:
    m = fresh()
    old, new = signed(hlc=pack(NOW_MS - 9, 0)), signed(hlc=pack(NOW_MS - 8, 0))
    r1 = m.merge(old, NOW_MS)
    assert (r1.outcome, r1.previous) == (Outcome.ACCEPTED_NEW, None)
    assert m.merge(old, NOW_MS).outcome is Outcome.DUPLICATE
    r2 = m.merge(new, NOW_MS)
    assert (r2.outcome, r2.previous) == (Outcome.ACCEPTED_NEWER, old)
    assert m.merge(old, NOW_MS).outcome is Outcome.STALE
    assert m.check(signed(hlc=pack(NOW_MS - 1, 0)), NOW_MS).accepted
    assert m.get(old.key) == new  # check changed nothing
    m.revert(r2)
    assert state(m) == state(applied([old]))
    m.revert(r1)
    assert state(m) == state(fresh())


# ------------------------------------------------------------------ version and sync


@given(st.lists(records(), max_size=10), st.lists(records(), max_size=10))
def test_version_equal_iff_same_stamps(xs: list[Record], ys: list[Record]) -> None:
    a, b = applied(xs), applied(ys)
    assert 0 <= a.version < 2**63
    assert (a.version == b.version) == (a.summary() == b.summary())


def test_version_of_empty_manifest_is_zero_and_changes_with_each_record() -> None:
    m = fresh()
    seen = {m.version}
    for i in range(20):
        m.merge(signed(f"filecast/r{i}"), NOW_MS)
        seen.add(m.version)
    assert len(seen) == 21


@given(st.lists(records(), max_size=12), st.lists(records(), max_size=12))
def test_sync_exchange_makes_two_manifests_equal(xs: list[Record], ys: list[Record]) -> None:
    rs = unique_stamps([*xs, *ys])
    a, b = applied([r for r in rs if r in xs]), applied([r for r in rs if r in ys])
    # a -> b: a's summary; b answers with what a lacks and asks for what it wants
    a_summary = summary_from_wire(json.loads(json.dumps(summary_to_wire(a.summary()))))
    for_a = b.missing_for(a_summary)
    wanted_by_b = b.wanted_from(a_summary)
    assert sorted(r.key for r in a.missing_for(b.summary())) == wanted_by_b
    for r in for_a:
        assert a.merge(r, NOW_MS).accepted  # only what a lacked was sent
    for r in a.missing_for(b.summary()):
        b.merge(r, NOW_MS)
    assert state(a) == state(b)
    assert a.missing_for(b.summary()) == b.missing_for(a.summary()) == []


def test_summary_codec_is_strict() -> None:
    ok = {"filecast/a": [pack(NOW_MS, 0), "server"]}
    assert summary_from_wire(ok) == {"filecast/a": (pack(NOW_MS, 0), "server")}
    for bad in [
        [],
        {"Filecast/A": [1, "server"]},
        {"filecast/../a": [1, "server"]},
        {"filecast/a": [1]},
        {"filecast/a": ["1", "server"]},
        {"filecast/a": [True, "server"]},
        {"filecast/a": [0, "server"]},
        {"filecast/a": [MAX_STAMP + 1, "server"]},
        {"filecast/a": [1, 5]},
        {"filecast/a": (1, "server")},
        {f"filecast/{i}": [1, "s"] for i in range(100_001)},
    ]:
        with pytest.raises(MalformedSummary):
            summary_from_wire(bad)


# ------------------------------------------------------------------ tombstone expiry


def test_tombstones_expire_after_keep_ms_and_adds_never_do() -> None:
    m = fresh(tombstone_keep_ms=30 * DAY_MS)
    t0 = NOW_MS - 40 * DAY_MS
    old_add = signed("filecast/kept", hlc=pack(t0, 0))
    tomb = sign(tombstone_fields("filecast/gone", hlc=pack(t0, 0), origin="server"), SERVER_KEY)
    for r in (old_add, tomb):
        m.merge(r, NOW_MS)
    later = NOW_MS - 40 * DAY_MS + 30 * DAY_MS
    assert m.expire_tombstones(later - 1) == []
    assert m.expire_tombstones(later) == [tomb]
    assert [r.key for r in m.records()] == ["filecast/kept"]
    assert m.version == applied([old_add]).version
    assert m.expire_tombstones(NOW_MS, keep_ms=0) == []
    assert wall_ms_of(tomb.hlc) == t0


def test_max_hlc_and_views() -> None:
    m = applied([signed("filecast/a", hlc=pack(NOW_MS - 3, 0)), signed("filecast/b")])
    assert m.max_hlc() == pack(NOW_MS - 3, 0)
    assert fresh().max_hlc() == 0
    assert [r.key for r in m.live_records()] == ["filecast/a", "filecast/b"]


def test_bad_authority_keys_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Manifest({"server": b"x" * 31})
    Manifest(AUTHORITIES)
