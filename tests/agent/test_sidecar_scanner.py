"""The seeder's sidecar scanner on a real directory, without a server: every bad pair is
an error in status, logged once (not at every scan), and nothing is sent; a pair still
being written waits. (The path to a real server is tests/server/test_sidecar_envoys.py.)"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

from vigo_agent.sidecars import SidecarScanner


class NoServer:
    """The scanner's link to the server: any attempt to send is a test failure."""

    sent = 0

    async def connect(self) -> NoReturn:
        NoServer.sent += 1
        raise AssertionError("the scanner tried to send something")


def scanner(seed: Path, **kw: Any) -> SidecarScanner:
    return SidecarScanner((seed,), NoServer(), None, **kw)  # type: ignore[arg-type]


def bad_pairs(seed: Path) -> dict[str, str]:
    """Sidecar name → words of the error it must get."""
    (seed / "real").write_bytes(b"x")
    (seed / "link").symlink_to(seed / "real")
    (seed / "link.swarm").write_text("target: etc/link\n")
    os.mkfifo(seed / "fifo.swarm")  # reading it must not block the scanner
    (seed / "fifo").write_bytes(b"x")
    (seed / "dir").mkdir()
    (seed / "dir.swarm").write_text("target: etc/dir\n")
    (seed / "orphan.swarm").write_text("target: etc/orphan\n")
    (seed / "up").write_bytes(b"x")
    (seed / "up.swarm").write_text("target: ../../etc/shadow\n")
    (seed / "bomb").write_bytes(b"x")
    (seed / "bomb.swarm").write_text("a: &a [x, x]\nb: &b [*a, *a]\ntarget: *b\n")
    (seed / ".swarm").write_text("target: x\n")
    (seed / "big").write_bytes(b"x")
    (seed / "big.swarm").write_text("target: x\n" + "#" * 20000)
    return {
        "link.swarm": "'link' is a symlink",
        "fifo.swarm": "not a regular file",
        "dir.swarm": "'dir' is not a regular file",
        "orphan.swarm": "'orphan' this sidecar describes does not exist",
        "up.swarm": "'..' component",
        "bomb.swarm": "anchors and aliases",
        ".swarm": "names no file",
        "big.swarm": "at most 16384",
    }


async def test_bad_pairs_are_errors_logged_once_and_nothing_is_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    want = bad_pairs(seed)
    scan = scanner(seed, settle_s=0)
    caplog.set_level(logging.WARNING, logger="vigo_agent.sidecars")
    for _ in range(3):
        await scan.scan_once()
    by_name = {Path(s["sidecar"]).name: s for s in scan.status()}
    assert set(by_name) == set(want)
    for name, words in want.items():
        assert by_name[name]["state"] == "error", by_name[name]
        assert words in by_name[name]["error"], (name, by_name[name]["error"])
        logged = [r for r in caplog.records if f"/{name}:" in r.getMessage()]
        assert len(logged) == 1, (name, [r.getMessage() for r in logged])
    assert NoServer.sent == 0
    assert scan.file_for("0" * 64) is None

    # fixing a sidecar clears its error at the next look; a new error is logged again
    (seed / "up.swarm").write_text("target: [a, a]\n")
    await scan.scan_once()
    (item,) = [s for s in scan.status() if s["sidecar"].endswith("up.swarm")]
    assert "lists 'a' twice" in item["error"]
    assert len([r for r in caplog.records if "/up.swarm:" in r.getMessage()]) == 2

    # a removed pair leaves the status
    (seed / "orphan.swarm").unlink()
    await scan.scan_once()
    assert "orphan.swarm" not in {Path(s["sidecar"]).name for s in scan.status()}


async def test_a_pair_being_written_waits_and_a_missing_seed_dir_is_reported(
    tmp_path: Path,
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "motd").write_bytes(b"hello")
    (seed / "motd.swarm").write_text("target: etc/motd\n")
    scan = scanner(seed, settle_s=30, rescan_s=3600)
    delay = await scan.scan_once()
    (item,) = scan.status()
    assert item["state"] == "settling" and item["blob"] is None
    assert 20 < delay <= 30.1  # the next look: when the pair has been still long enough
    assert NoServer.sent == 0

    gone = scanner(tmp_path / "missing")
    await gone.scan_once()
    (item,) = gone.status()
    assert item["state"] == "error" and "No such file or directory" in item["error"]
