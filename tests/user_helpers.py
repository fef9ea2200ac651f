"""Running code as another local user, from a test that runs as root.

The interpreter may live where other users cannot exec it (pyenv under /root, which is
0700), so we fork this already-running one and drop privileges for good in the child:
the daemon sees the child's uid through SO_PEERCRED, as with any login.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def run_as(
    user: pwd.struct_passwd, fn: Callable[[], int], stdin: bytes = b""
) -> tuple[int, str, str]:
    """Run ``fn`` in a forked child as ``user``; its exit code, stdout and stderr.

    ``stdin`` becomes the child's fd 0 (e.g. passphrases for ``--passphrase-fd 0``).
    Import everything ``fn`` needs before calling this: after ``setuid`` the child may
    not be able to read the checkout.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 70
        try:
            os.close(in_w)
            os.dup2(in_r, 0)
            sys.stdin = os.fdopen(0, "r", closefd=False)
            sys.stdout = os.fdopen(out_w, "w")  # pytest's capture objects stay behind
            sys.stderr = os.fdopen(err_w, "w")
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ["HOME"] = user.pw_dir
            code = fn()
        except BaseException as exc:  # e.g. SystemExit from argparse
            print(f"child: {exc!r}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    os.close(in_r)
    with os.fdopen(in_w, "wb") as f:
        f.write(stdin)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr


def run_cli_as(
    user: pwd.struct_passwd, argv: list[str], stdin: bytes = b""
) -> tuple[int, str, str]:
    """The real ``vigo`` CLI entry point as ``user``."""
    # Load every module the CLI will need while we may still read them.
    import cli.cmd_puddle
    import cli.cmd_swarm
    import cli.vigo
    import vigo_swarm.puddle  # noqa: F401

    cli.vigo.build_parser()
    return run_as(user, lambda: cli.vigo.main(argv), stdin)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create test users and run commands as them")


def ensure_user(name: str) -> pwd.struct_passwd:
    """A system user without a home (kept between tests)."""
    require_root()
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


@contextlib.contextmanager
def temporary_user(name: str, home: Path) -> Iterator[pwd.struct_passwd]:
    """A user with its own home at ``home`` (0700), removed afterwards."""
    require_root()
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run(["userdel", name], check=True, capture_output=True)
    subprocess.run(
        [
            "useradd",
            "--create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ],
        check=True,
        capture_output=True,
    )
    try:
        user = pwd.getpwnam(name)
        home.chmod(0o700)
        yield user
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
