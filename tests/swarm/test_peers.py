"""The peer table's invariants (pure: no sockets, ``now`` passed in)."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from vigo_swarm.peers import PeerTable, Source, TableConfig

ME = uuid.uuid4()


def table(**kw: float) -> PeerTable:
    return PeerTable(ME, TableConfig(**kw))  # type: ignore[arg-type]


def test_hint_alone_never_makes_a_peer() -> None:
    t = table()
    other = uuid.uuid4()
    assert t.hint(other, "10.0.0.2", 1531, Source.MULTICAST, now=0.0)
    assert t.confirmed() == []
    assert [v.confirmed for v in t.snapshot(0.0)] == [False]


def test_probe_ok_confirms_and_probe_failed_backs_off() -> None:
    t = table(probe_backoff_base_s=1.0)
    other = uuid.uuid4()
    t.hint(other, "10.0.0.2", 1531, Source.MULTICAST, now=0.0)
    (probe,) = t.due_probes(0.0)
    assert t.due_probes(0.0) == []  # in flight: not handed out twice
    t.probe_failed(probe, 0.0, "refused")
    assert t.due_probes(0.5) == []
    (probe,) = t.due_probes(1.0)
    t.probe_failed(probe, 1.0, "refused")
    assert t.due_probes(2.5) == []  # second failure: 2 s
    (probe,) = t.due_probes(3.0)
    assert t.probe_ok(probe, 3.0, hostname="b")
    assert t.confirmed() == [other]


def test_own_and_revoked_uuids_never_enter() -> None:
    t = table()
    assert not t.hint(ME, "10.0.0.1", 1531, Source.MULTICAST, now=0.0)
    bad = uuid.uuid4()
    t.hint(bad, "10.0.0.3", 1531, Source.SERVER, now=0.0)
    (probe,) = t.due_probes(0.0)
    assert t.revoke([bad]) == [bad]
    assert not t.probe_ok(probe, 0.1, hostname="x")  # a probe in flight cannot resurrect it
    assert not t.hint(bad, "10.0.0.3", 1531, Source.MULTICAST, now=1.0)
    assert t.snapshot(1.0) == []


def test_confirmed_peer_is_reprobed_after_ttl_and_expires_without_hints() -> None:
    t = table(confirm_ttl_s=10.0, expire_s=5.0)
    other = uuid.uuid4()
    t.hint(other, "10.0.0.2", 1531, Source.MULTICAST, now=0.0)
    (probe,) = t.due_probes(0.0)
    t.probe_ok(probe, 0.0, hostname="b")
    assert t.due_probes(5.0) == []
    assert t.expire(9.0) == []  # confirmed recently: kept though hints stopped
    assert t.expire(10.0) == [other]  # neither hinted nor confirmed lately: gone


def test_failed_reprobe_unconfirms() -> None:
    t = table(confirm_ttl_s=10.0)
    other = uuid.uuid4()
    t.hint(other, "10.0.0.2", 1531, Source.MULTICAST, now=0.0)
    (probe,) = t.due_probes(0.0)
    t.probe_ok(probe, 0.0, hostname="b")
    t.hint(other, "10.0.0.2", 1531, Source.MULTICAST, now=10.0)
    (probe,) = t.due_probes(10.0)
    t.probe_failed(probe, 10.0, "identity mismatch")
    assert t.confirmed() == []


def test_table_is_bounded_and_keeps_confirmed_peers() -> None:
    t = table(max_entries=3)
    keep = uuid.uuid4()
    t.hint(keep, "10.0.0.2", 1531, Source.MULTICAST, now=0.0)
    (probe,) = t.due_probes(0.0)
    t.probe_ok(probe, 0.0, hostname="keep")
    for i in range(100):  # a spoof flood of random UUIDs
        t.hint(uuid.uuid4(), f"10.0.1.{i}", 1531, Source.MULTICAST, now=float(i))
    assert len(t.snapshot(100.0)) == 3
    assert keep in t.confirmed()


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from("hpfex")), max_size=60)
)
def test_random_operation_sequences_keep_invariants(ops: list) -> None:
    """Whatever the order of events, only probe_ok confirms and revoked never return."""
    peers = [uuid.uuid4() for _ in range(6)]
    t = table(confirm_ttl_s=5.0, expire_s=3.0, max_entries=4)
    ok: set[uuid.UUID] = set()
    revoked: set[uuid.UUID] = set()
    now = 0.0
    for who, addr, op in ops:
        now += 1.0
        p = peers[who]
        if op == "h":
            t.hint(p, f"10.0.0.{addr}", 1531, Source.MULTICAST, now)
        elif op in "pf":
            for probe in t.due_probes(now):
                if op == "p" and probe.uuid not in revoked:
                    t.probe_ok(probe, now, hostname=None)
                    ok.add(probe.uuid)
                else:
                    t.probe_failed(probe, now, "x")
        elif op == "e":
            t.expire(now)
        else:
            t.revoke([p])
            revoked.add(p)
        assert set(t.confirmed()) <= ok
        assert not set(t.confirmed()) & revoked
        assert ME not in {v.uuid for v in t.snapshot(now)}
