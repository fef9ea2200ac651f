"""The SQLite manifest store: real SQLite files in tmp_path, no mocks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from manifest_helpers import AUTHORITIES, DAY_MS, NOW_MS, SERVER_KEY, fresh, signed, state

from vigo_swarm.hlc import pack
from vigo_swarm.manifest import (
    BadSignature,
    FarFutureRecord,
    MergeResult,
    Outcome,
    Retention,
    sign,
    tombstone_fields,
)
from vigo_swarm.manifest_store import ManifestStore, ManifestStoreError


def open_store(path: Path, **kw: int) -> ManifestStore:
    return ManifestStore(path, AUTHORITIES, **kw)


def test_accepted_records_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    rs = [
        signed("filecast/a", retention=Retention.pinned()),
        signed("filecast/b", retention=Retention.expires_at(1_800_000_000.5), targets=("名/ü",)),
        sign(tombstone_fields("filecast/c", hlc=pack(NOW_MS - 1, 0), origin="server"), SERVER_KEY),
    ]
    with open_store(db) as store:
        for r in rs:
            assert store.merge(r, NOW_MS).outcome is Outcome.ACCEPTED_NEW
        newer = signed("filecast/a", hlc=pack(NOW_MS, 0))
        assert store.merge(newer, NOW_MS).outcome is Outcome.ACCEPTED_NEWER
        expected = state(store.manifest)
    with open_store(db) as again:
        assert state(again.manifest) == expected
        assert again.load_errors == []
        assert again.manifest.get("filecast/a") == newer


def test_nothing_accepted_is_lost_without_a_clean_close(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    store = open_store(db)
    store.merge(signed("filecast/a"), NOW_MS)
    store.merge(signed("filecast/b"), NOW_MS)
    # no close(): a second process (the restarted daemon) opens the same file
    other = open_store(db)
    assert [r.key for r in other.manifest.records()] == ["filecast/a", "filecast/b"]
    other.close()
    store.close()


def test_refused_records_are_neither_kept_nor_written(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    with open_store(db) as store:
        good = signed("filecast/a")
        future = signed("filecast/b", hlc=pack(NOW_MS + 3_600_000, 0))
        forged = signed("filecast/c", size_bytes=1)
        object.__setattr__(forged, "size_bytes", 2)  # tampered after signing
        out = store.merge_many([good, future, forged, good], NOW_MS)
        assert isinstance(out[0], MergeResult) and out[0].accepted
        assert isinstance(out[1], FarFutureRecord)
        assert isinstance(out[2], BadSignature)
        assert isinstance(out[3], MergeResult) and out[3].outcome is Outcome.DUPLICATE
        with pytest.raises(FarFutureRecord):
            store.merge(future, NOW_MS)
    with open_store(db) as again:
        assert [r.key for r in again.manifest.records()] == ["filecast/a"]


def test_a_failed_write_undoes_the_whole_batch(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    with open_store(db) as store:
        first = signed("filecast/a")
        store.merge(first, NOW_MS)
        before = state(store.manifest)
    raw = sqlite3.connect(db)  # the disk "fills up" when the third record is written
    raw.execute(
        "CREATE TRIGGER full BEFORE INSERT ON records WHEN NEW.key = 'filecast/boom'"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    raw.commit()
    raw.close()
    with open_store(db) as store:
        batch = [signed("filecast/a", hlc=pack(NOW_MS, 0)), signed("filecast/b"),
                 signed("filecast/boom")]  # fmt: skip
        with pytest.raises(ManifestStoreError, match="disk is full"):
            store.merge_many(batch, NOW_MS)
        assert state(store.manifest) == before  # memory undone, newest first
        assert store.merge(signed("filecast/c"), NOW_MS).accepted  # and the store works on
    with open_store(db) as again:
        assert [r.key for r in again.manifest.records()] == ["filecast/a", "filecast/c"]
        assert again.manifest.get("filecast/a") == first


def test_tombstone_expiry_is_persisted(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    tomb = sign(tombstone_fields("filecast/x", hlc=pack(NOW_MS - 31 * DAY_MS, 0),
                                 origin="server"), SERVER_KEY)  # fmt: skip
    with open_store(db) as store:
        store.merge(tomb, NOW_MS)
        store.merge(signed("filecast/y"), NOW_MS)
        assert store.expire_tombstones(NOW_MS) == [tomb]
        assert store.expire_tombstones(NOW_MS) == []
    with open_store(db) as again:
        assert [r.key for r in again.manifest.records()] == ["filecast/y"]


def test_rows_that_no_longer_verify_are_left_out_at_load(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    with open_store(db) as store:
        store.merge(signed("filecast/a"), NOW_MS)
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO records VALUES ('filecast/junk', '{not json')")
    raw.execute("INSERT INTO records VALUES ('filecast/moved', (SELECT body FROM records"
                " WHERE key = 'filecast/a'))")  # fmt: skip
    raw.commit()
    raw.close()
    other_fleet = {"server": bytes(32)}  # re-enrolled under another authority
    with ManifestStore(db, other_fleet) as store:
        assert len(store.manifest) == 0
        assert len(store.load_errors) == 3
    with open_store(db) as store:
        assert [r.key for r in store.manifest.records()] == ["filecast/a"]
        assert any("junk" in e for e in store.load_errors)
        assert any("moved" in e and "stored under" in e for e in store.load_errors)


def test_far_future_rows_load_after_the_clock_went_back(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    ahead = signed("filecast/a", hlc=pack(NOW_MS + 50_000, 0))
    with open_store(db) as store:
        store.merge(ahead, NOW_MS)
    with open_store(db) as store:  # no now at load: what was accepted stays accepted
        assert store.manifest.get("filecast/a") == ahead


def test_unusable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestStoreError, match="cannot open"):
        open_store(tmp_path / "missing-dir" / "manifest.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ManifestStoreError, match="cannot read"):
        open_store(garbage)
    newer = tmp_path / "newer.db"
    raw = sqlite3.connect(newer)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(ManifestStoreError, match="schema version 99"):
        open_store(newer)


def test_store_uses_wal(tmp_path: Path) -> None:
    db = tmp_path / "manifest.db"
    with open_store(db):
        pass
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_store_and_manifest_agree(tmp_path: Path) -> None:
    rs = [signed(f"filecast/{i}", hlc=pack(NOW_MS - i, 0)) for i in range(10)]
    m = fresh()
    with open_store(tmp_path / "m.db") as store:
        store.merge_many(rs, NOW_MS)
        for r in rs:
            m.merge(r, NOW_MS)
        assert state(store.manifest) == state(m)
