"""Project-wide test settings and fixtures.

Hypothesis' per-example deadline is a timing assertion; on shared, noisy machines it
flakes, so it is off. Examples still run to completion and every test has a hard
timeout (pytest-timeout, pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_helpers import FakeEnrolled, make_envoy
from hypothesis import HealthCheck, settings

from vigo_server_lite.ca import FleetCA

settings.register_profile(
    "vigo", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("vigo")


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    """A fleet CA of the test's own, in its tmp dir."""
    return FleetCA.load_or_create(tmp_path / "ca")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (root only), always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full tests mount a 2 MiB tmpfs, which needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="vigo-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def envoy(shared_dir: Path) -> FakeEnrolled:
    """An enrolled envoy "alpha" (real fleet CA) whose state dir other users can reach."""
    ca = FleetCA.load_or_create(shared_dir / "ca")
    e = make_envoy(ca, shared_dir, "alpha")
    e.paths.root.chmod(0o755)
    return e
