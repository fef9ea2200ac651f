"""A blob fetch that ran out of disk: say what is full and by how much, and wait for space.

When the blob store raises ``StoreFull``, nothing partial is visible and every verified
chunk is kept (see ``blobstore``). filecast then turns the error into a ``DiskFull``
report (which filesystem, how much the rest of the blob needs, how much is free, what
is kept) for the log and ``vigo swarm status``, and waits with ``wait_for_space`` before
it fetches again, resuming where it stopped:

- it polls the free space every ``poll_s`` (a ``statvfs``, cheap) and retries as soon
  as the rest of the blob fits, or at least one more chunk fits than at the failure;
- it retries after ``max_wait_s`` regardless: ``statvfs`` cannot see a quota (EDQUOT),
  and a retry that fails again costs one chunk write and a new report.

``space_is_back`` and ``DiskFull.message`` are pure; the rest is a little IO.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from .blobstore import BlobInfo, BlobStore, StoreFull, decode_bitmap

POLL_S = 1.0
MAX_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class DiskFull:
    """What ran out of space while fetching one blob."""

    root: Path  # the blob store's root (``<state>/swarm``)
    sha256: str
    needed_bytes: int  # the chunks still missing
    free_bytes: int  # available to us on that filesystem, right after the failure
    kept_chunks: int  # verified and kept: not fetched again
    total_chunks: int
    chunk_bytes: int
    quota: bool  # EDQUOT: a quota, not the filesystem, is exhausted
    doing: str  # what the store was doing when it failed

    def message(self) -> str:
        what = f"disk quota exceeded under {self.root}" if self.quota else f"{self.root} is full"
        return (
            f"{what}: blob {self.sha256[:12]} needs {_mib(self.needed_bytes)} more, "
            f"{_mib(self.free_bytes)} free (failed while {self.doing}); "
            f"{self.kept_chunks} of {self.total_chunks} chunks are verified and kept; "
            "retrying as soon as space is freed"
        )


E = TypeVar("E", bound=BaseException)


def first_leaf(group: BaseExceptionGroup[E]) -> E:
    """The first exception in a (possibly nested: one group per nursery) exception group."""
    exc: E | BaseExceptionGroup[E] = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def space_is_back(report: DiskFull, free_now: int) -> bool:
    """Pure: worth fetching again — the rest fits, or at least one more chunk does."""
    return free_now >= report.needed_bytes or free_now >= report.free_bytes + report.chunk_bytes


def free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged writer on ``path``'s filesystem (``df``'s Avail)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def free_bytes_async(path: Path) -> int:
    return await trio.to_thread.run_sync(free_bytes, path)


def assess(store: BlobStore, info: BlobInfo, error: StoreFull) -> DiskFull:
    """The report for ``error`` (blocking IO: a ``statvfs`` and the partial's bitmap)."""
    bitmap = store.have(info.sha256)
    kept = decode_bitmap(bitmap, info.num_chunks) if bitmap is not None else set()
    needed = sum(info.chunk_size(i) for i in range(info.num_chunks) if i not in kept)
    cause = error.__cause__
    return DiskFull(
        root=store.root,
        sha256=info.sha256,
        needed_bytes=needed,
        free_bytes=free_bytes(store.root),
        kept_chunks=len(kept),
        total_chunks=info.num_chunks,
        chunk_bytes=info.chunk_bytes,
        quota=isinstance(cause, OSError) and cause.errno == errno.EDQUOT,
        doing=error.doing,
    )


async def wait_for_space(
    report: DiskFull,
    *,
    poll_s: float = POLL_S,
    max_wait_s: float = MAX_WAIT_S,
    free: Callable[[Path], Awaitable[int]] = free_bytes_async,
) -> None:
    """Return once ``space_is_back`` (polled every ``poll_s``), at most after ``max_wait_s``."""
    with trio.move_on_after(max_wait_s):
        while True:
            await trio.sleep(poll_s)
            try:
                now = await free(report.root)
            except OSError:
                continue  # the filesystem is in trouble: the deadline still retries
            if space_is_back(report, now):
                return


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
