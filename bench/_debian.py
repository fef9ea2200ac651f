"""Benchmarks install the Debian tools their baselines need, like ./run does for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def ensure(command: str, package: str) -> None:
    """``apt-get install package`` when ``command`` is not on PATH (root only)."""
    if shutil.which(command) is not None:
        return
    if os.geteuid() != 0:
        sys.exit(f"this benchmark needs {command!r}: apt-get install {package} (as root)")
    print(f"installing the Debian {package} package for {command}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
