"""No run leaves a lab behind: crashed owners, programs that never call down(), failing
tests, orphan namespaces; detached labs stay until ``down``. Needs root."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from netlab import Lab, NetlabError, wait_for
from netlab.pytest_fixtures import LabFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root]

RUN_DIR = Path("/run/vigo-netlab")
PROJECT = Path(__file__).resolve().parents[2]


def lab_namespaces(lab_id: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return [ns for ns in names if ns.startswith(f"vgl-{lab_id}-")]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def lab_mounts(lab_id: str) -> list[str]:
    """Mount points under the lab's root dir, from the kernel's own table."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(f"/tmp/vgl-{lab_id}/")]


def assert_gone(lab_id: str, pids: Sequence[int] = ()) -> None:
    assert lab_mounts(lab_id) == []
    assert lab_namespaces(lab_id) == []
    assert not (RUN_DIR / f"{lab_id}.json").exists()
    assert not Path(f"/tmp/vgl-{lab_id}").exists()
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived"


def python(code: str, *, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=PROJECT,
    )


CRASHING_OWNER = """
    import sys
    from netlab import Lab
    lab = Lab.create(2, with_server=False)
    lab.mount_tmpfs("envoy1", 4)
    pid = lab.spawn("envoy1", ["sleep", "1000"])
    print(lab.id, pid, flush=True)
    sys.stdin.read()  # until the test SIGKILLs us
"""


@pytest.mark.parametrize("how", ["cleanup_stale", "next_create"])
def test_stale_lab_of_a_killed_owner_is_removed(how: str, lab_factory: LabFactory) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CRASHING_OWNER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    try:
        assert owner.stdout is not None
        lab_id, pid_text = owner.stdout.readline().split()
    finally:
        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: a crash
        owner.wait(timeout=10)
    sleeper = int(pid_text)
    assert len(lab_namespaces(lab_id)) == 3 and alive(sleeper)  # it really was left behind
    assert lab_mounts(lab_id) == [f"/tmp/vgl-{lab_id}/envoy1"]
    if how == "cleanup_stale":
        assert lab_id in Lab.cleanup_stale()
    else:
        lab_factory(1, with_server=False)
    assert_gone(lab_id, [sleeper])


def test_program_exiting_without_down_cleans_up_at_exit() -> None:
    done = python("""
        from netlab import Lab
        lab = Lab.create(1, with_server=False)
        lab.mount_tmpfs("envoy1", 4)
        lab.spawn("envoy1", ["sleep", "1000"])
        print(lab.id, flush=True)
        raise RuntimeError("crash without down()")
    """)
    assert done.returncode == 1 and "crash without down()" in done.stderr
    assert_gone(done.stdout.split()[0])


FAILING_TESTS = """
    from netlab import Lab
    from netlab.pytest_fixtures import lab_factory  # noqa: F401

    def test_with_statement():
        with Lab.create(1, with_server=False) as lab:
            lab.mount_tmpfs("envoy1", 4)
            lab.spawn("envoy1", ["sleep", "1000"])
            print("LAB", lab.id)
            assert False, "deliberate failure"

    def test_fixture(lab_factory):
        lab = lab_factory(2, with_server=False)
        lab.mount_tmpfs("envoy2", 4)
        lab.spawn("envoy2", ["sleep", "1000"])
        print("LAB", lab.id)
        raise RuntimeError("deliberate error")
"""


def test_a_failing_netlab_test_still_cleans_up(tmp_path: Path) -> None:
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(textwrap.dedent(FAILING_TESTS))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-s",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 failed" in done.stdout, done.stdout
    ids = re.findall(r"LAB ([0-9a-f]{6})", done.stdout)
    assert len(ids) == 2, done.stdout
    for lab_id in ids:
        assert_gone(lab_id)


def test_state_dir_tmpfs_keeps_its_files_resizes_and_is_gone_after_down(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(1, with_server=False)
    state = lab.host("envoy1").state_dir
    (state / "identity").mkdir()
    (state / "identity" / "envoy.json").write_text("{}")  # as if enrolled already
    assert lab.mount_tmpfs("envoy1", 4) == state
    assert lab_mounts(lab.id) == [str(state)] and lab.mounts == (state,)
    assert (state / "identity" / "envoy.json").read_text() == "{}"  # moved onto it
    assert os.statvfs(state).f_blocks * os.statvfs(state).f_frsize == 4 << 20
    with pytest.raises(OSError) as full:
        (state / "filler").write_bytes(bytes(5 << 20))
    assert full.value.errno == errno.ENOSPC
    lab.resize_tmpfs("envoy1", 8)
    (state / "filler").write_bytes(bytes(5 << 20))  # fits now
    with pytest.raises(NetlabError, match="already a tmpfs"):
        lab.mount_tmpfs("envoy1", 4)
    pid = lab.spawn("envoy1", ["sh", "-c", f"cd {state} && exec sleep 1000"])  # busy
    wait_for(lambda: os.readlink(f"/proc/{pid}/cwd") == str(state), 10, "the shell in it")
    lab.down()
    assert_gone(lab.id, [pid])


def test_orphan_namespaces_are_removed(lab_factory: LabFactory) -> None:
    orphan = f"vgl-{os.urandom(3).hex()}-envoy1"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    try:
        Lab.cleanup_stale()
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert orphan not in out
    finally:
        subprocess.run(["ip", "netns", "delete", orphan], capture_output=True)


def test_live_owner_lab_is_not_stale(lab_factory: LabFactory) -> None:
    lab = lab_factory(1, with_server=False)
    assert lab.id not in Lab.cleanup_stale()
    assert len(lab_namespaces(lab.id)) == 2


def netlab_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=PROJECT,
    )


def test_cli_detached_lab_exec_list_and_down() -> None:
    up = netlab_cli("up", "--bare", "--envoys", "2", "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    lab_id = info["lab"]
    try:
        assert [h["name"] for h in info["hosts"]] == ["envoy1", "envoy2"]
        assert lab_id not in Lab.cleanup_stale()  # detached: its owner exited on purpose
        assert len(lab_namespaces(lab_id)) == 3
        listed = netlab_cli("list")
        assert f"{lab_id}  detached" in listed.stdout
        ex = netlab_cli("exec", "--lab", lab_id, "envoy2", "--", "ip", "-o", "-4", "addr")
        assert ex.returncode == 0 and "10.77.0.12/24" in ex.stdout, ex.stderr
        status = netlab_cli("exec", "--lab", lab_id, "envoy1", "--", "sh", "-c", "exit 5")
        assert status.returncode == 5
        bad = netlab_cli("exec", "--lab", lab_id, "nope", "--", "true")
        assert bad.returncode == 1 and "no host 'nope'" in bad.stderr
    finally:
        down = netlab_cli("down", "--lab", lab_id)
    assert down.returncode == 0, down.stderr
    assert_gone(lab_id)


def test_detached_lab_processes_are_killed_by_down(lab_factory: LabFactory) -> None:
    lab = lab_factory(1, with_server=False)
    pid = lab.spawn("envoy1", ["sleep", "1000"])
    lab.detach()
    assert lab.id not in Lab.cleanup_stale()
    attached = Lab.attach(lab.id)
    assert attached.is_running("envoy1")
    attached.down()
    wait_for(lambda: not alive(pid), 10, "the detached lab's process to die")
    assert_gone(lab.id, [pid])
