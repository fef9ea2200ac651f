"""Check-in's pure parts: answer validation and the backoff schedule."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from vigo_agent.checkin import CheckinError, next_delay_s, parse_answer


def test_parse_answer() -> None:
    peer = uuid.uuid4()
    gone = uuid.uuid4()
    answer = parse_answer(
        {
            "peers": [
                {"uuid": str(peer), "hostname": "b", "addresses": ["10.0.0.2"], "port": 1531}
            ],
            "revoked": {"serials": ["ff", "10"], "uuids": [str(gone)]},
            "checkin_interval_s": 5,
        }
    )
    assert answer.peers[0].uuid == peer and answer.peers[0].addresses == ("10.0.0.2",)
    assert answer.revoked_serials == {255, 16} and answer.revoked_uuids == {gone}
    assert answer.interval_s == 5.0


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"peers": [{"uuid": "nope", "addresses": [], "port": 1}]},
        {"peers": [{"addresses": [], "port": 1}]},
        {"revoked": {"serials": ["zz"]}},
        {"revoked": []},
        {"checkin_interval_s": "soon"},
    ],
)
def test_malformed_answers_are_refused(bad: object) -> None:
    with pytest.raises(CheckinError, match="malformed"):
        parse_answer(bad)


def test_schedule_splays_on_success_and_backs_off_on_failure() -> None:
    assert 27.0 <= next_delay_s(30, 0, 300, 0.0) <= next_delay_s(30, 0, 300, 0.999) <= 33.0
    delays = [next_delay_s(30, f, 300, 0.999) for f in range(1, 12)]
    assert delays == sorted(delays)  # never shrinks while failing
    assert delays[0] <= 1.0 and max(delays) <= 300
    assert next_delay_s(30, 40, 300, 0.0) >= 0.75 * 300  # capped, not overflowed


def test_progress_report_fits_the_server_schema() -> None:
    from vigo_agent.checkin import progress_report

    blob = "a" * 64
    report = progress_report(
        [
            {"blob": blob, "state": "partial", "have_chunks": 3, "total_chunks": 10, "error": ""},
            {"blob": blob, "state": "materialized", "have_chunks": 1, "total_chunks": 10},
            {"blob": blob, "state": "missing", "have_chunks": 5, "total_chunks": 10},
            {
                "blob": blob,
                "state": "weird",
                "have_chunks": 50,
                "total_chunks": 10,
                "error": "disk\nfull" + "x" * 600,
            },
        ]
    )
    assert report[0] == {"blob": blob, "have_chunks": 3, "total_chunks": 10, "state": "partial"}
    assert report[1]["have_chunks"] == 10 and report[2]["have_chunks"] == 0
    assert report[3]["state"] == "error" and report[3]["have_chunks"] == 10
    assert "\n" not in report[3]["error"] and len(report[3]["error"]) == 500


def test_revocation_list_save_failure_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing write (a full disk) never ends the check-in loop; unchanged lists are
    not rewritten at every check-in."""
    from vigo_agent.checkin import CheckinService

    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be")
    svc = CheckinService(
        node=None,  # type: ignore[arg-type]  # not used to save the list
        server_url="https://server:8443",
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "cert.pem",
        key_file=tmp_path / "key.pem",
        revocations_file=blocker / "revocations.json",
        interval_s=1.0,
    )
    for _ in range(3):
        svc._save_revocations(b'{"serials": [], "uuids": []}')
    warnings = [r for r in caplog.records if "cannot save the revocation list" in r.message]
    assert len(warnings) == 1 and svc._save_failing
    blocker.unlink()
    blocker.mkdir()
    svc._save_revocations(b'{"serials": [], "uuids": []}')  # the next check-in saves it
    assert (blocker / "revocations.json").read_bytes() == b'{"serials": [], "uuids": []}'
    assert not svc._save_failing and os.listdir(blocker) == ["revocations.json"]
    (blocker / "revocations.json").unlink()
    svc._save_revocations(b'{"serials": [], "uuids": []}')  # unchanged: not rewritten
    assert os.listdir(blocker) == []
