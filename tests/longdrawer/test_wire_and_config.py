"""Longdrawer's multicast codec and person ids, ~/.longdrawer/config.yaml, the SQLite
index (seq, epoch, progress), and the status rendering."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cli.cmd_longdrawer import render
from vigo_swarm.longdrawer import (
    AnnounceError,
    Entry,
    IndexStore,
    Kind,
    PersonConfigError,
    VersionVector,
    person_id,
    person_key,
)
from vigo_swarm.longdrawer.announce import MAX_PEOPLE, Announcement, decode, split
from vigo_swarm.longdrawer.config import PeerAddress, load_person_config

ENVOY = uuid.UUID(int=7)
PID = "0123456789abcdef0123456789abcdef"


def test_announcement_round_trip_and_split() -> None:
    ann = Announcement(ENVOY, 1531, ((PID, 4),))
    assert decode(ann.encode()) == ann
    people = {f"{i:032x}": i for i in range(MAX_PEOPLE * 2 + 1)}
    parts = split(ENVOY, 1531, people)
    assert len(parts) == 3 and all(len(p.encode()) <= 1200 for p in parts)
    assert {k for p in parts for k, _ in p.people} == set(people)
    assert split(ENVOY, 1531, {})[0].people == ()


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"vigo": "swarm/1"}, "not a Vigo longdrawer"),
        ({"people": {"BOB": 1}}, "person id"),
        ({"people": {PID: -1}}, "sequence"),
        ({"people": {PID: True}}, "sequence"),
        ({"people": [PID]}, "people must be"),
        ({"people": {f"{i:032x}": 1 for i in range(MAX_PEOPLE + 1)}}, "people must be"),
        ({"port": 0}, "port"),
        ({"uuid": "x"}, "uuid"),
        ({"user": "bob"}, "unknown fields"),
    ],
)
def test_bad_announcements_are_refused(obj: dict[str, object], reason: str) -> None:
    good = {"vigo": "longdrawer/1", "uuid": str(ENVOY), "port": 1531, "people": {PID: 1}}
    with pytest.raises(AnnounceError, match=reason):
        decode(json.dumps(good | obj).encode())
    with pytest.raises(AnnounceError, match="oversized"):
        decode(b" " * 1201)
    with pytest.raises(AnnounceError, match="JSON"):
        decode(b"\xff")


def test_person_ids_are_keyed_by_the_fleet_ca() -> None:
    key = person_key(b"ca-one")
    assert person_id(key, "bob") == person_id(person_key(b"ca-one"), "bob")
    assert person_id(key, "bob") != person_id(person_key(b"ca-two"), "bob")
    assert person_id(key, "bob") != person_id(key, "alice")
    assert "bob" not in person_id(key, "bob") and len(person_id(key, "bob")) == 32


def test_person_config() -> None:
    cfg = load_person_config(
        b"cross_subnet_peers:\n  - 10.2.0.7\n  - laptop.example.org:1600\n  - fe80::1\n", "c"
    )
    assert cfg.cross_subnet_peers == (
        PeerAddress("10.2.0.7"),
        PeerAddress("laptop.example.org", 1600),
        PeerAddress("fe80::1"),
    )
    assert load_person_config(b"", "c").cross_subnet_peers == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"peers: []\n", "unknown key 'peers'"),
        (b"- a\n", "top level must be a mapping"),
        (b"cross_subnet_peers: host\n", "must be a list"),
        (b"cross_subnet_peers: [host:0]\n", "port must be"),
        (b"cross_subnet_peers: ['a b']\n", "neither an IP address nor a host name"),
        (b"cross_subnet_peers: ['$(reboot)']\n", "neither an IP address nor a host name"),
        (b"cross_subnet_peers: [\n", "not valid YAML at line"),
        (b"x: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"#" * 70000, "over 65536 bytes"),
        (b"cross_subnet_peers: [" + b"a," * 65 + b"]\n", "at most 64"),
    ],
)
def test_bad_person_config_is_refused(text: bytes, reason: str) -> None:
    with pytest.raises(PersonConfigError, match=reason) as info:
        load_person_config(text, "~/.longdrawer/config.yaml")
    assert "python" not in str(info.value)  # a YAML error names the line, not the text


def test_index_store_sequences_epochs_and_progress(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "index.db")
    a = str(uuid.UUID(int=1))
    e1 = Entry("a.txt", Kind.DIR, VersionVector.of({a: 1}), a, mode=0o755)
    e2 = Entry("b", Kind.SYMLINK, VersionVector.of({a: 2}), a, target="a.txt")
    assert store.put(PID, [(e1, "sig1")]) == 1
    assert store.put(PID, [(e2, ""), (e1.tombstone(a, 5), "")]) == 3
    entries, seq = store.since(PID, 1, 10)
    assert seq == 3 and [e.path for e in entries] == ["b", "a.txt"]
    assert [e.seq for e in entries] == [2, 3] and entries[1].deleted
    assert store.since(PID, 3, 10) == ([], 3)
    assert store.get(PID, "b") == (entries[0], "")
    many = [f"f{i}" for i in range(1200)]  # past SQLite's parameter limit
    store.put(PID, [(Entry(p, Kind.DIR, VersionVector.of({a: 1}), a), p) for p in many[::2]])
    got = store.get_many(PID, ["b", "nope", *many])
    assert set(got) == {"b", *many[::2]} and got["b"] == store.get(PID, "b")
    assert got["f10"][1] == "f10" and store.get_many(PID, []) == {}
    epoch, _ = store.state(PID)
    assert store.progress(PID, a) == ("", 0)
    store.set_progress(PID, a, "e", 9)
    assert store.progress(PID, a) == ("e", 9)
    assert store.counts(PID)["tombstones"] == 1 and store.counts(PID)["symlinks"] == 1
    store.close()
    again = IndexStore(tmp_path / "index.db")
    assert again.state(PID) == (epoch, 603)  # kept across restarts
    assert IndexStore(tmp_path / "other.db").state(PID)[0] != epoch  # a new database: new epoch


def test_status_rendering() -> None:
    assert "no ~/longdrawer/" in render([])[0]
    person = {
        "person": "bob",
        "folder": "/home/bob/longdrawer",
        "in_sync": False,
        "pending_files": 2,
        "pending_bytes": 10,
        "index": {"files": 1, "dirs": 0, "symlinks": 0, "bytes": 3},
        "seq": 4,
        "conflicts": 1,
        "bytes_fetched": 0,
        "peers": [
            {
                "uuid": "u",
                "hostname": "h2",
                "address": "10.0.0.2",
                "via": "multicast",
                "in_sync": False,
                "their_seq": 9,
                "last_error": "boom",
            }
        ],
        "changing": ["log.txt"],
        "last_error": "bad",
    }
    text = "\n".join(render([person]))
    for part in ("pending: 2 files, 10 bytes", "conflicts: 1", "h2", "boom", "log.txt", "bad"):
        assert part in text
