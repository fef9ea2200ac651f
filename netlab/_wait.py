"""Waiting for a condition with a deadline: the one sanctioned way to "let time pass".

Tests and the demo never sleep a fixed time hoping something happened; they poll a
predicate until it holds, and on timeout say what they waited for and what they saw
last — which is most of the diagnosis of a failed integration test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ._errors import NetlabError, WaitTimeout

T = TypeVar("T")

DEFAULT_INTERVAL_S = 0.1


def wait_for(
    predicate: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    abort: Callable[[], str | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    A ``NetlabError`` raised by the predicate counts as "not yet" (a daemon that is still
    starting refuses its control socket) and becomes the last observed value. ``abort``
    is checked after each failed attempt; a non-None reason ends the wait at once with a
    ``NetlabError`` (e.g. "the daemon exited") instead of waiting out the deadline.
    Raises :class:`WaitTimeout` (a ``TimeoutError``) with ``what`` and the last value.
    """
    deadline = clock() + timeout_s
    last: object = None
    while True:
        try:
            value = predicate()
        except NetlabError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if abort is not None:
            reason = abort()
            if reason is not None:
                raise NetlabError(f"gave up waiting for {what}: {reason}")
        now = clock()
        if now >= deadline:
            raise WaitTimeout(what, timeout_s, last)
        sleep(min(interval_s, deadline - now))
