"""Many small files at once: a thousand 4 KiB files made on one envoy arrive on the
other in a handful of /small requests (not a Fetcher, with its TLS handshakes, each),
whole and identical."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import trio
from ld_helpers import pair, tree_digest, wait_until

from vigo_swarm.longdrawer.batch import MAX_SMALL_COUNT

pytestmark = pytest.mark.integration

FILES = 1000


async def test_a_thousand_small_files_come_in_few_requests(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b = await pair(tmp_path, nursery, 41, 42)
    fa, fb = a.folder(), b.folder()
    (fa / "many").mkdir()
    started = time.monotonic()
    contents = [os.urandom(4096) for _ in range(FILES)]
    for i, data in enumerate(contents):
        (fa / "many" / f"f{i:04}.bin").write_bytes(data)
    (fa / "many" / "empty.txt").write_bytes(b"")

    def arrived() -> bool:
        return (fb / "many").is_dir() and len(os.listdir(fb / "many")) == FILES + 1

    await wait_until(arrived, "all small files on b", timeout_s=90)
    print(f"{FILES} x 4 KiB: {time.monotonic() - started:.2f} s")  # informative only
    await wait_until(lambda: tree_digest(fa) == tree_digest(fb), "identical trees")
    (ps,) = b.svc.people.values()
    # a file is on disk a moment before its apply is counted (the index write comes
    # between): wait for the count, then check it is exact
    await wait_until(lambda: ps.stats.applied >= FILES + 2, "every apply counted")
    # every file came whole in /small answers: a few requests, no per-file fetch
    assert 1 <= ps.stats.small_requests <= 3 * (FILES // MAX_SMALL_COUNT + 1)
    assert ps.stats.bytes_fetched == FILES * 4096
    assert ps.stats.files_written == FILES + 1
    # written once on each side: the sender indexed them without copying them into its
    # store (served from the folder), the receiver wrote them from memory to the folder
    shas = [hashlib.sha256(d).hexdigest() for d in contents]
    for side in (a, b):
        assert all(side.svc.store.blob_path(sha) is None for sha in shas)


async def test_a_renamed_or_copied_small_file_moves_no_bytes(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b = await pair(tmp_path, nursery, 43, 44)
    fa, fb = a.folder(), b.folder()
    data = os.urandom(50_000)
    (fa / "note.txt").write_bytes(data)
    await wait_until(lambda: (fb / "note.txt").exists(), "the note on b")
    (ps,) = b.svc.people.values()
    fetched, requests = ps.stats.bytes_fetched, ps.stats.small_requests
    os.rename(fa / "note.txt", fa / "renamed.txt")
    (fa / "copy.txt").write_bytes(data)
    await wait_until(
        lambda: (
            not (fb / "note.txt").exists()
            and (fb / "renamed.txt").exists()
            and (fb / "copy.txt").exists()
        ),
        "the rename and the copy on b",
    )
    assert (fb / "renamed.txt").read_bytes() == (fb / "copy.txt").read_bytes() == data
    assert (ps.stats.bytes_fetched, ps.stats.small_requests) == (fetched, requests)
