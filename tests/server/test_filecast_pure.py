"""Filecast's pure parts: query and body parsing, keys, the status view, the CLI's view."""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.signing
import pytest

from cli import vigocli_swarm_view as view
from vigo_server_lite.errors import Refusal
from vigo_server_lite.filecast import (
    Progress,
    is_live,
    parse_distribute,
    parse_progress,
    parse_retention,
    parse_sync,
    record_key,
    retention_text,
)
from vigo_server_lite.filecast_status import Reported, build_status
from vigo_server_lite.registry import EnvoyRecord
from vigo_swarm.hlc import pack
from vigo_swarm.manifest import Record, RecordFields, Retention, sign, tombstone_fields

NOW = 1_800_000_000.0
KEY = nacl.signing.SigningKey(b"k" * 32)


def record(target: str, data: bytes, *, retention: Retention | None = None) -> Record:
    fields = RecordFields(
        key=record_key(target),
        blob=hashlib.sha256(data).hexdigest(),
        size_bytes=3 * 65536 + 1,
        chunk_bytes=65536,
        chunks_digest="0" * 64,
        targets=(target,),
        retention=retention or Retention.until_revoked(),
        tombstone=False,
        hlc=pack(int(NOW * 1000), 1),
        origin="server",
    )
    return sign(fields, KEY)


def envoy(name: str, state: str = "active", checked_in: bool = True) -> EnvoyRecord:
    return EnvoyRecord(
        uuid=f"uuid-{name}",
        hostname=name,
        state=state,  # type: ignore[arg-type]
        enrolled_at=NOW,
        token_id=None,
        last_checkin=NOW if checked_in else None,
        manifest_version=5,
    )


def test_record_key_is_stable_short_and_a_valid_manifest_key() -> None:
    key = record_key("etc/motd")
    assert key == "filecast/" + hashlib.sha256(b"etc/motd").hexdigest()[:40]
    assert record_key("etc/motd") == key != record_key("etc/motd2")
    tombstone_fields(key, hlc=1, origin="server")  # the manifest accepts it as a key


def test_parse_distribute_defaults_and_strictness() -> None:
    req = parse_distribute({"target": "etc/motd"}, NOW)
    assert (req.target, req.key, req.chunk_bytes) == ("etc/motd", record_key("etc/motd"), None)
    assert req.retention == Retention.until_revoked()
    req = parse_distribute({"target": "a", "retention": "pinned", "chunk_bytes": "65536"}, NOW)
    assert (req.retention, req.chunk_bytes) == (Retention.pinned(), 65536)
    with pytest.raises(Refusal, match="unknown query parameter 'tagret'"):
        parse_distribute({"tagret": "a"}, NOW)
    with pytest.raises(Refusal, match="'target' is required"):
        parse_distribute({}, NOW)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("until_revoked", True),
        ("pinned", True),
        (f"expires_at:{int(NOW) + 1}", True),
        (f"expires_at:{NOW + 0.5}", True),
        (f"expires_at:{int(NOW)}", False),  # now is not the future
        ("expires_at:", False),
        ("expires_at:1e12", False),
        ("expires_at:nan", False),
        ("expires_at:-5", False),
        ("Pinned", False),
        ("expires_at", False),
    ],
)
def test_parse_retention(text: str, ok: bool) -> None:
    if ok:
        assert retention_text(parse_retention(text, NOW)).split(":")[0] == text.split(":")[0]
    else:
        with pytest.raises(Refusal) as info:
            parse_retention(text, NOW)
        assert info.value.code == "bad_retention"


def test_parse_progress_accepts_each_state() -> None:
    items = parse_progress(
        [
            {"blob": "a" * 64, "have_chunks": 0, "total_chunks": 2, "state": "missing"},
            {"blob": "b" * 64, "have_chunks": 1, "total_chunks": 2, "state": "partial"},
            {"blob": "c" * 64, "have_chunks": 2, "total_chunks": 2, "state": "complete"},
            {"blob": "d" * 64, "have_chunks": 0, "total_chunks": 0, "state": "materialized"},
            {
                "blob": "e" * 64,
                "have_chunks": 1,
                "total_chunks": 2,
                "state": "error",
                "error": "disk full",
            },
            {
                "blob": "f" * 64,
                "have_chunks": 1,
                "total_chunks": 2,
                "state": "partial",
                "error": "",
            },
        ]
    )
    assert [i.state for i in items] == [
        "missing",
        "partial",
        "complete",
        "materialized",
        "error",
        "partial",
    ]
    assert items[4].error == "disk full" and items[5].error is None
    assert parse_progress([]) == ()


def test_parse_sync() -> None:
    assert parse_sync({"summary": {"filecast/ab": [5, "server"]}}) == {"filecast/ab": (5, "server")}
    for bad in ({}, {"summary": {"x": [0, "s"]}}, {"summary": {}, "x": 1}, None):
        with pytest.raises(Refusal):
            parse_sync(bad)


def test_is_live() -> None:
    assert is_live(record("a", b"a"), NOW)
    assert not is_live(record("a", b"a", retention=Retention.expires_at(NOW)), NOW)
    assert is_live(record("a", b"a", retention=Retention.expires_at(NOW + 1)), NOW)
    assert not is_live(sign(tombstone_fields(record_key("a"), hlc=9, origin="server"), KEY), NOW)


def _view() -> dict[str, Any]:
    motd, tool = record("etc/motd", b"m"), record("opt/tool", b"t")
    reports = {
        "uuid-a": {motd.blob: Reported(Progress(motd.blob, 4, 4, "materialized"), NOW)},
        "uuid-b": {
            motd.blob: Reported(Progress(motd.blob, 1, 4, "partial", "slow peer"), NOW),
            tool.blob: Reported(Progress(tool.blob, 4, 4, "materialized"), NOW),
        },
    }
    envoys = [envoy("b"), envoy("a"), envoy("gone", "revoked"), envoy("new", checked_in=False)]
    return build_status([tool, motd], envoys, reports, server_version=5, now=NOW)


def test_build_status() -> None:
    status = _view()
    assert [r["target"] for r in status["records"]] == ["etc/motd", "opt/tool"]
    motd = status["records"][0]
    assert [(e["hostname"], e["state"]) for e in motd["envoys"]] == [
        ("a", "materialized"),
        ("b", "partial"),
        ("new", "unknown"),
    ]
    assert motd["envoys"][1]["error"] == "slow peer"
    assert motd["envoys"][2]["total_chunks"] == 4 and motd["envoys"][0]["manifest_in_sync"]
    assert motd["done"] is False
    totals = status["totals"]
    assert (totals["records"], totals["envoys"], totals["pairs"]) == (2, 3, 6)
    assert totals["counts"]["materialized"] == 2 and totals["counts"]["unknown"] == 3
    assert totals["done"] is False
    nothing = build_status([], [envoy("a")], {}, server_version=0, now=NOW)
    assert nothing["totals"]["done"] is True
    nobody = build_status([record("x", b"x")], [], {}, server_version=0, now=NOW)
    assert nobody["totals"]["done"] is True and nobody["records"][0]["envoys"] == []


def test_status_lines_and_redraw() -> None:
    lines = view.status_lines(_view(), unicode=False)
    text = "\n".join(lines)
    assert lines[0].startswith("etc/motd  blob ") and "1/3 materialized" in lines[0]
    assert "[" + "#" * 24 + "] 4/4" in text and "slow peer" in text
    assert "(has not checked in yet)" in text
    assert lines[-1].startswith("in progress: 2 records x 3 envoys = 6:")
    assert "\x1b" not in text
    assert view.bar(1, 4, unicode=True) == "[" + "█" * 6 + "░" * 18 + "]"
    assert view.bar(0, 0, unicode=False) == "[" + "#" * 24 + "]"
    assert all(len(line) < 30 for line in view.fit(lines, 30))
    assert view.redraw(["a", "b"], 0) == "\x1b[Ja\nb\n"
    assert view.redraw(["a"], 2) == "\x1b[2F\x1b[Ja\n"
    assert view.status_lines(build_status([], [], {}, server_version=0, now=NOW))[0].startswith(
        "no live filecast records"
    )
    assert view.human_bytes(1536) == "1.5 KiB" and view.human_bytes(5) == "5 B"
