"""A hostile partner, and a person racing the root daemon in their own folder:
names with '/' (empty, '.' or '..' components; a file used as a directory), a symlink
and a write through it in the same batch, a directory swapped for a symlink just
before the daemon writes into it, a small file whose bytes do not match its hash.
Nothing is written outside the folder, nothing corrupt is written, the daemon keeps
syncing honest files."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from ld_helpers import LdEnvoy, pair, wait_until

from vigo_swarm.longdrawer import Decision, Entry, Kind, VersionVector
from vigo_swarm.longdrawer.state import PersonSync

pytestmark = pytest.mark.integration


def row(path: str, by: str, kind: Kind = Kind.FILE, **kw: object) -> tuple[Entry, str]:
    entry = Entry(path, kind, VersionVector.of({by: 7}), by, mode=0o644, mtime_ns=1)
    return replace(entry, **kw), ""  # type: ignore[arg-type]


def file_fields(data: bytes) -> dict[str, object]:
    """The content fields of a one-chunk file entry for ``data``."""
    sha = hashlib.sha256(data).hexdigest()
    return {
        "size": len(data),
        "sha256": sha,
        "chunk_bytes": 1 << 20,
        "chunks": (bytes.fromhex(sha),),
    }


def person(envoy: LdEnvoy) -> PersonSync:
    (ps,) = envoy.svc.people.values()
    return ps


async def still_syncs(a: LdEnvoy, b: LdEnvoy, name: str) -> None:
    """The victim b is up and applies an honest change from a."""
    (a.folder() / name).write_text(name)
    await wait_until(lambda: (b.folder() / name).is_file(), f"{name} reaches b")
    assert (b.folder() / name).read_text() == name


async def serve_rows(evil: LdEnvoy, rows: list[tuple[Entry, str]], blobs: list[bytes]) -> None:
    """Put rows straight into evil's served index (its scans would never make them)."""
    ps = person(evil)
    for data in blobs:
        evil.svc.store.add_bytes(data, 1 << 20)
    evil.svc.index.put(ps.person.pid, rows)
    await evil.svc._after_change(ps)


async def test_names_with_slashes_are_refused(tmp_path: Path, nursery: trio.Nursery) -> None:
    evil, victim = await pair(tmp_path, nursery, 51, 52)
    (evil.folder() / "plain.txt").write_text("a file")
    await wait_until(lambda: (victim.folder() / "plain.txt").is_file(), "plain.txt")
    by = str(evil.node.identity.uuid)
    data = b"payload"
    content = file_fields(data)
    bad = ["x/", "x//y", "./x", "x/./y", "ok/../../esc", "/etc/esc", "a\\/..\\/b/.."]
    rows = [row(p, by, **content) for p in bad]
    rows.append(row("plain.txt/inner", by, **content))  # a file used as a directory
    await serve_rows(evil, rows, [data])
    ps = person(victim)
    await wait_until(lambda: ps.stats.refused >= len(bad) + 1, "every hostile name refused")
    assert (victim.folder() / "plain.txt").read_text() == "a file"
    inside = sorted(str(p.relative_to(victim.folder())) for p in victim.folder().rglob("*"))
    assert inside == ["plain.txt"]
    assert not (tmp_path / "esc").exists() and not Path("/etc/esc").exists()
    await still_syncs(evil, victim, "after-names.txt")


async def test_a_symlink_and_a_write_through_it_in_one_batch(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    evil, victim = await pair(tmp_path, nursery, 53, 54)
    outside = tmp_path / "outside"
    outside.mkdir()
    by = str(evil.node.identity.uuid)
    data = b"through the link"
    content = file_fields(data)
    rows = [
        row("d", by, Kind.SYMLINK, target=str(outside)),
        row("d/x", by, **content),  # after the link, in the same index answer
        row("e/x", by, **content),  # before the link that replaces its directory
        row("e", by, Kind.SYMLINK, target=str(outside)),
    ]
    await serve_rows(evil, rows, [data])
    ps = person(victim)
    fv = victim.folder()
    await wait_until(lambda: (fv / "d").is_symlink() and ps.stats.refused >= 1, "d as a link")
    assert os.readlink(fv / "d") == str(outside)
    assert list(outside.iterdir()) == []
    await still_syncs(evil, victim, "after-link.txt")
    assert list(outside.iterdir()) == []


async def test_a_directory_swapped_for_a_symlink_before_the_write(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b = await pair(tmp_path, nursery, 55, 56)
    outside = tmp_path / "outside"
    outside.mkdir()
    (a.folder() / "sub").mkdir()
    await wait_until(lambda: (b.folder() / "sub").is_dir(), "sub on b")
    ps = person(b)
    real_apply = ps.folder.apply
    swapped: list[str] = []
    once = threading.Lock()  # the service writes files side by side, in threads

    def swap_then_apply(
        decision: Decision, local: tuple[Entry, str] | None, data: bytes | None = None
    ) -> str:
        # The person (who owns the folder) swaps the directory for a link to
        # somewhere else after every check the service made, right before the write.
        assert decision.entry is not None
        with once:
            if decision.entry.path.startswith("sub/") and not swapped:
                os.rename(b.folder() / "sub", b.folder() / "sub.real")
                os.symlink(outside, b.folder() / "sub")
                swapped.append(decision.entry.path)
        return real_apply(decision, local, data)

    ps.folder.apply = swap_then_apply  # type: ignore[method-assign]
    for i in range(20):
        (a.folder() / "sub" / f"f{i}.txt").write_text(f"file {i}")
    await wait_until(lambda: bool(swapped) and ps.stats.refused >= 1, "the write refused")
    assert list(outside.iterdir()) == []
    await still_syncs(a, b, "after-swap.txt")
    assert list(outside.iterdir()) == []


async def test_a_small_file_that_does_not_match_its_hash(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    evil, victim = await pair(tmp_path, nursery, 57, 58)
    data = os.urandom(3000)
    bad_sha = hashlib.sha256(data).hexdigest()
    evil_folder = person(evil).folder
    real_read = evil_folder.read_indexed  # small files are served from the folder

    def flipped(path: str, sha: str, size: int) -> bytes | None:
        got = real_read(path, sha, size)
        if got is None or sha != bad_sha:
            return got
        return bytes([got[0] ^ 0xFF]) + got[1:]

    evil_folder.read_indexed = flipped  # type: ignore[method-assign]
    (evil.folder() / "small.bin").write_bytes(data)
    ps = person(victim)
    await wait_until(lambda: "bad bytes" in ps.stats.last_error, "the bad bytes refused")
    assert not (victim.folder() / "small.bin").exists()
    assert victim.svc.store.blob_path(bad_sha) is None
    await still_syncs(evil, victim, "after-bad-bytes.txt")
    assert not (victim.folder() / "small.bin").exists()
