"""Both units pass `systemd-analyze verify` and keep their sandboxing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "systemd"
INSTALLED_BIN = "/opt/vigo/venv/bin/"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["vigo-agent.service", "vigo-server-lite.service"])
def test_unit_verifies(unit: str, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's venv, the only change
    text = (UNITS / unit).read_text().replace(INSTALLED_BIN, str(Path(sys.executable).parent) + "/")
    (tmp_path / unit).write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in res.stderr.splitlines() if unit in line or "error" in line.lower()]
    assert res.returncode == 0 and not problems, res.stderr


@pytest.mark.parametrize("unit", ["vigo-agent.service", "vigo-server-lite.service"])
def test_unit_is_sandboxed(unit: str) -> None:
    text = (UNITS / unit).read_text()
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=",
        "CapabilityBoundingSet=",
    ):
        assert setting in text, f"{unit} lacks {setting}"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """Negative control: the check above can fail."""
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/nonexistent/vigo\nBogusKey=1\n")
    res = subprocess.run(
        ["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0 or "BogusKey" in res.stderr
