"""A hostile partner: paths with '..', absolute paths, NUL, a symlink then a write
through it, a chunk that does not match its hash. Nothing is written outside the
folder, nothing corrupt is written, the victim keeps syncing honest entries."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
import trio
from ld_helpers import partnered, start_envoy, wait_until

from vigo_server_lite.ca import FleetCA
from vigo_swarm.longdrawer import Entry, Kind, VersionVector

pytestmark = pytest.mark.integration


def poison(path: str, by: str, **kw: object) -> tuple[Entry, str]:
    entry = Entry(path, Kind.FILE, VersionVector.of({by: 5}), by, mode=0o644, mtime_ns=1)
    return Entry(**{**{f: getattr(entry, f) for f in entry.__slots__}, **kw}), ""  # type: ignore[arg-type]


async def test_hostile_partner_changes_nothing_outside(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    mport = 40000 + uuid.uuid4().int % 20000
    victim = await start_envoy(ca, tmp_path, nursery, 31, mport)
    evil = await start_envoy(ca, tmp_path, nursery, 32, mport)
    await wait_until(lambda: partnered(victim, evil), "partners")
    outside = tmp_path / "outside"
    outside.mkdir()
    honest = evil.folder() / "ok.txt"
    honest.write_bytes(b"fine")
    # Serve every chunk of corrupt.bin with one byte flipped (the store would never do it
    # by itself), from before the file is there: the victim never gets an honest copy.
    payload = os.urandom(200_000)
    bad = hashlib.sha256(payload).hexdigest()
    served = []
    real_read = evil.svc.store.read_chunk

    def flipped(sha: str, index: int) -> bytes:
        data = bytearray(real_read(sha, index))
        if sha == bad:
            served.append(index)
            data[0] ^= 0xFF
        return bytes(data)

    evil.svc.store.read_chunk = flipped  # type: ignore[method-assign]
    corrupt = evil.folder() / "corrupt.bin"
    corrupt.write_bytes(payload)
    os.symlink(outside, evil.folder() / "link")  # a link out of the folder, then a write via it
    ps_evil = next(iter(evil.svc.people.values()))
    await wait_until(
        lambda: evil.svc.index.get(ps_evil.person.pid, "corrupt.bin") is not None, "evil index"
    )
    by = str(evil.node.identity.uuid)
    text = hashlib.sha256(b"x").hexdigest()
    rows = [
        poison(
            "../escape.txt",
            by,
            sha256=text,
            size=1,
            chunk_bytes=1 << 20,
            chunks=(bytes.fromhex(text),),
        ),
        poison("/abs.txt", by),
        poison("nul\0.txt", by),
        poison(
            "link/pwned.txt",
            by,
            sha256=text,
            size=1,
            chunk_bytes=1 << 20,
            chunks=(bytes.fromhex(text),),
        ),
    ]
    evil.svc.index.put(ps_evil.person.pid, rows)  # straight into the served index
    x = tmp_path / "x"
    x.write_bytes(b"x")
    evil.svc.store.add_file(x, 1 << 20)  # the blob link/pwned.txt names, served honestly
    ps_evil.blobs.add(text)
    await evil.svc._after_change(ps_evil)

    fv = victim.folder()
    ps_victim = next(iter(victim.svc.people.values()))
    await wait_until(lambda: (fv / "ok.txt").exists() and (fv / "link").is_symlink(), "honest")
    await wait_until(
        lambda: ps_victim.stats.refused >= 4 and ps_victim.stats.applied >= 2 and served,
        "hostile entries seen, honest ones counted",
    )
    assert (fv / "ok.txt").read_bytes() == b"fine"
    assert os.readlink(fv / "link") == str(outside)  # kept as a link, never followed
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs.txt").exists()
    assert not (fv / "corrupt.bin").exists()
    assert victim.svc.store.blob_path(bad) is None
    assert "refused" in ps_victim.stats.last_error or "pwned" in ps_victim.stats.last_error
