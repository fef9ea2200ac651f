"""Running commands and managing processes: the only module that calls ``subprocess``
directly for lab plumbing, and the edge where OS errors become ``NetlabError``.

A pid alone is not an identity: after a crash the pid recorded in a state file may
belong to an unrelated process by the time we look. A :class:`ProcessRef` pairs the pid
with the process start time (``/proc/<pid>/stat`` field 22, in clock ticks since boot),
which together are unique for the life of the machine; we only ever signal a ref that
still matches.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ._errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
_POLL_S = 0.02


def run(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing text output.

    Raises :class:`CommandError` (with the command line and its stderr) when it cannot be
    started, when it outlives ``timeout_s``, or — if ``check`` — when it exits non-zero.
    """
    argv = list(argv)
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL if input_text is None else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            argv,
            None,
            _text(exc.stderr),
            _text(exc.stdout),
            reason=f"timed out after {timeout_s:g} s",
        ) from exc
    except OSError as exc:
        raise CommandError(argv, None, str(exc), reason="could not start") from exc
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stderr, done.stdout)
    return done


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


@dataclass(frozen=True)
class ProcessRef:
    """A process identity that survives pid reuse: pid plus start time in clock ticks."""

    pid: int
    start_ticks: int


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of a live process, or None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def process_ref(pid: int) -> ProcessRef | None:
    """A ref for a running pid, or None if it is gone."""
    stat = _read_stat(pid)
    return None if stat is None else ProcessRef(pid, stat[1])


def is_alive(ref: ProcessRef) -> bool:
    """True while the very process ``ref`` names exists and is not a zombie."""
    stat = _read_stat(ref.pid)
    return stat is not None and stat[1] == ref.start_ticks and stat[0] not in ("Z", "X")


def _signal(ref: ProcessRef, sig: int, *, group: bool) -> None:
    if not is_alive(ref):
        return
    try:
        if group and os.getpgid(ref.pid) == ref.pid:
            os.killpg(ref.pid, sig)
        else:
            os.kill(ref.pid, sig)
    except ProcessLookupError:
        pass  # exited between the check and the signal


def stop(
    refs: Iterable[ProcessRef],
    *,
    sig: int = signal.SIGTERM,
    timeout_s: float = 5.0,
    kill_timeout_s: float = 5.0,
    group: bool = True,
    reap: Iterable[subprocess.Popen[bytes]] = (),
) -> float:
    """Signal processes (their whole process group when they lead one), wait for them to
    exit, escalate to SIGKILL after ``timeout_s``; return the seconds until all were gone.

    ``reap`` lists our own children among them: they are polled so they do not linger as
    zombies (``is_alive`` already treats a zombie as gone).
    """
    pending = [ref for ref in refs if is_alive(ref)]
    children = list(reap)
    started = time.monotonic()
    if not pending:
        return 0.0
    for ref in pending:
        _signal(ref, sig, group=group)
    escalated = sig == signal.SIGKILL
    deadline = started + timeout_s
    while True:
        for child in children:
            child.poll()
        pending = [ref for ref in pending if is_alive(ref)]
        now = time.monotonic()
        if not pending:
            return now - started
        if now >= deadline:
            if escalated:
                raise CommandError(
                    [f"kill -9 {ref.pid}" for ref in pending], None, "", reason="still running"
                )
            log.warning("pids %s ignored signal %d; sending SIGKILL", [r.pid for r in pending], sig)
            for ref in pending:
                _signal(ref, signal.SIGKILL, group=group)
            escalated = True
            deadline = now + kill_timeout_s
        time.sleep(_POLL_S)
