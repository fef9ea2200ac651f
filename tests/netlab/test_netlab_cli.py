"""``python -m netlab`` and the demo. The first tests need no root; the demo runs end
to end against the stand-in commands (``fake_vigo.py``) and needs root."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netlab import NetlabError
from netlab._cli import build_parser, main
from netlab._demo import STEPS, DemoRun, Step, run_demo
from netlab.pytest_fixtures import requires_root

PROJECT = Path(__file__).resolve().parents[2]


def test_help_documents_every_verb() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netlab", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT,
    )
    assert done.returncode == 0
    for verb in ("up", "exec", "list", "down", "demo"):
        assert re.search(rf"^\s+{verb}\s", done.stdout, re.M), verb
    assert "10.77.0.0/24" in done.stdout and "examples:" in done.stdout


@pytest.mark.parametrize(
    "argv", [["up", "--envoys", "-1"], ["up", "--rate-mbit", "0"], ["frobnicate"], []]
)
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2


def test_exec_parses_the_command_after_double_dash() -> None:
    args = build_parser().parse_args(["exec", "--lab", "ab12cd", "envoy1", "--", "ip", "-br", "a"])
    assert args.host == "envoy1" and args.lab == "ab12cd"
    command = args.command[1:] if args.command[:1] == ["--"] else args.command  # as cmd_exec
    assert command == ["ip", "-br", "a"]


def test_not_root_is_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = io.StringIO()
    assert main(["demo"], out=out) == 2
    assert "needs root (network namespaces)" in out.getvalue()
    assert main(["up", "--envoys", "1"], out=out) == 2
    assert "needs root" in capsys.readouterr().err


def test_exec_without_command_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "envoy1", "--"], out=io.StringIO()) == 1
    assert "no command given" in capsys.readouterr().err


# -- the demo, end to end against stand-ins ------------------------------------------


@pytest.mark.netlab
@requires_root
def test_demo_runs_and_tears_down(fake_bin: Path) -> None:
    out = io.StringIO()
    demo = DemoRun(out=out, envoys=3, timeout_s=30, bin_dir=fake_bin)
    # the stand-ins speak discovery only; the real demo, filecast included, is
    # run by test_real_demo below
    steps = [s for s in STEPS if not s.title.startswith("filecast")]
    assert run_demo(demo, steps) == 0, out.getvalue()
    text = out.getvalue()
    assert f"[{len(steps)}/{len(steps)}] summary" in text
    for name in ("envoy1", "envoy2", "envoy3"):
        assert re.search(rf"{name}\s+10\.77\.0\.1\d\s+uuid [0-9a-f-]{{36}}", text), text
    assert text.count("mTLS-confirmed, found via multicast") == 6
    assert demo.lab is not None and not demo.lab.root_dir.exists()
    assert "demo ok" in text


@pytest.mark.netlab
@requires_root
@pytest.mark.parametrize(
    ("error", "code"), [(NetlabError("step broke"), 1), (KeyboardInterrupt(), 130)]
)
def test_demo_failure_or_interrupt_still_tears_down(
    fake_bin: Path, error: BaseException, code: int
) -> None:
    def explode(demo: DemoRun) -> None:
        raise error

    out = io.StringIO()
    demo = DemoRun(out=out, envoys=1, timeout_s=30, bin_dir=fake_bin)
    assert run_demo(demo, [*STEPS[:2], Step("explode", explode)]) == code
    assert demo.lab is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"vgl-{demo.lab.id}-" not in listed
    if code == 1:
        assert "demo failed: step broke" in out.getvalue()
        assert "logs kept in" in out.getvalue()
        assert (demo.lab.root_dir / "logs" / "server.log").exists()
    subprocess.run(["rm", "-rf", str(demo.lab.root_dir)], check=True)


@pytest.mark.netlab
@requires_root
def test_real_demo_is_the_readme_main_job() -> None:
    """README command 1, for real: `python -m netlab demo` with this venv's vigo."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "netlab", "demo"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "demo ok" in res.stdout
    assert "every envoy holds a verified copy" in res.stdout
    assert "Traceback" not in res.stderr
