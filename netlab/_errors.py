"""The netlab exception tree and the root check.

    NetlabError                 anything netlab could not do; the message says what
    ├── NotRoot                 network namespaces need root (CAP_SYS_ADMIN + CAP_NET_ADMIN)
    ├── CommandError            an ``ip``/``nft``/``tc``/lab command failed or timed out
    └── WaitTimeout             a polled condition did not hold before its deadline
                                (also a ``TimeoutError``, so ``except TimeoutError`` works)

Foreign errors (``OSError``, ``subprocess.TimeoutExpired``) are translated at the edge in
``_proc.run`` so that a caller only ever has to catch ``NetlabError``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["CommandError", "NetlabError", "NotRoot", "WaitTimeout", "is_root", "require_root"]

#: Why tests skip and the CLI stops when the euid is not 0; one wording everywhere.
ROOT_REASON = "netlab needs root (network namespaces)"


class NetlabError(Exception):
    """Base of every error netlab raises."""


class NotRoot(NetlabError):
    """Raised by :func:`require_root` when the process is not running as root."""

    def __init__(self, what: str = "netlab") -> None:
        super().__init__(
            f"{what} needs root: it creates network namespaces, veth pairs and a bridge "
            f"(CAP_SYS_ADMIN and CAP_NET_ADMIN); run it as root, e.g. with sudo"
        )


class CommandError(NetlabError):
    """A command failed (non-zero exit) or did not finish in time.

    ``returncode`` is ``None`` when the command timed out or could not be started.
    The message carries the whole command line and the command's stderr, because
    "ip: RTNETLINK answers: File exists" means nothing without the command that said it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str,
        stdout: str = "",
        *,
        reason: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        if reason is None:
            reason = f"exit status {returncode}"
        detail = stderr.strip() or stdout.strip()
        message = f"command failed ({reason}): {' '.join(self.argv)}"
        if detail:
            message += f"\n{detail}"
        super().__init__(message)


class WaitTimeout(NetlabError, TimeoutError):
    """A condition polled by ``wait_for`` did not become true before its deadline."""

    def __init__(self, what: str, timeout_s: float, last: object) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.last = last
        super().__init__(f"timed out after {timeout_s:g} s waiting for {what}; last seen: {last!r}")


def is_root() -> bool:
    """True when running with euid 0 (what ``ip netns`` needs)."""
    return os.geteuid() == 0


def require_root(what: str = "netlab") -> None:
    """Raise :class:`NotRoot` unless running as root."""
    if not is_root():
        raise NotRoot(what)
