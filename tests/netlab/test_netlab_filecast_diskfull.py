"""Issue 3, done-when (netlab): disk full on a receiver whose state dir is a small tmpfs.

The blob does not fit: the receiver reports a clear error (what is full, how much is
needed), its daemon keeps answering, the other receiver completes, nothing partial is
materialized and the chunks it verified are intact. Once the tmpfs is grown, the
transfer resumes and completes without fetching the kept chunks again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netlab.fleet import Fleet
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root]

MIB = 1 << 20
SIZE = 24 * MIB  # 96 chunks of the default 256 KiB
SMALL_MIB = 12  # the receiver's whole state dir: the blob cannot fit
GROWN_MIB = 64
TARGET = "data/blob"


def blob_state(fleet: Fleet, host: str, sha: str) -> dict[str, Any] | None:
    blobs = fleet.status(host).get("filecast", [])  # raises if the daemon does not answer
    return next((b for b in blobs if b["blob"] == sha), None)


def link_of(fleet: Fleet, host: str) -> Path:
    return fleet.lab.host(host).state_dir / "swarm" / "files" / TARGET


def materialized_sha(fleet: Fleet, host: str) -> str | None:
    link = link_of(fleet, host)
    if not (link.is_symlink() and link.exists()):
        return None
    return fleet.lab.exec(host, ["sha256sum", str(link)]).stdout.split()[0]


def exited(fleet: Fleet, host: str) -> Callable[[], str | None]:
    """For ``wait_for(abort=…)``: a daemon that died ends the wait with its log."""

    def check() -> str | None:
        if fleet.lab.is_running(host):
            return None
        return f"{host}'s daemon exited:\n{fleet.lab.log_tail(host)}"

    return check


def kept_chunks(partial: Path, source: bytes, chunk: int) -> set[int]:
    """Chunks the receiver marked verified in its partial; each must equal the source's."""
    have, data = (partial / "have").read_bytes(), (partial / "data").read_bytes()
    kept = {i for i in range(len(have) * 8) if have[i >> 3] & (0x80 >> (i & 7))}
    for i in kept:
        piece = slice(i * chunk, (i + 1) * chunk)
        assert hashlib.sha256(data[piece]).digest() == hashlib.sha256(source[piece]).digest(), i
    return kept


@pytest.mark.timeout(300)
def test_disk_full_receiver_reports_stays_up_and_completes_once_space_is_freed(
    fleet_factory: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_factory(3, agent_config={"checkin_interval_s": 1})
    fleet.enroll_all()
    fleet.start_envoy("envoy1", {"seed_dirs": [str(fleet.data_dir / "seed")]})
    fleet.start_envoy("envoy2")
    fleet.start_envoy("envoy3", state_size_mib=SMALL_MIB)  # identity moved onto the tmpfs
    fleet.wait_until_confirmed(timeout_s=60)
    small = fleet.lab.host("envoy3").state_dir
    swarm = small / "swarm"

    source = os.urandom(SIZE)
    (tmp_path / "blob.bin").write_bytes(source)
    out = fleet.vigocli(
        "swarm", "filecast", "distribute", str(tmp_path / "blob.bin"), "--target", TARGET, "--json"
    )
    blob = json.loads(out)["blob"]
    sha, chunk = blob["sha256"], blob["chunk_bytes"]
    assert sha == hashlib.sha256(source).hexdigest()

    def full_error() -> dict[str, Any] | None:
        state = blob_state(fleet, "envoy3", sha)
        return state if state is not None and state["state"] == "error" else None

    died = exited(fleet, "envoy3")
    state = fleet.wait_for(full_error, 120, "envoy3 reporting its full disk", abort=died)
    error = state["error"]
    assert f"{swarm} is full" in error, error
    assert f"blob {sha[:12]} needs" in error and "MiB free" in error, error
    assert "retrying as soon as space is freed" in error, error

    # the other receiver is not held up
    fleet.wait_for(lambda: materialized_sha(fleet, "envoy2"), 120, "envoy2 completing")
    assert materialized_sha(fleet, "envoy2") == sha

    # nothing partial is visible; what was kept is intact
    assert not os.path.lexists(link_of(fleet, "envoy3"))
    assert not (swarm / ".blobs" / sha).exists()
    kept = kept_chunks(swarm / ".blobs" / "partial" / sha, source, chunk)
    total = state["total_chunks"]
    assert 0 < len(kept) < total
    assert f"{len(kept)} of {total} chunks are verified and kept" in error, error
    assert os.statvfs(small).f_bavail * os.statvfs(small).f_frsize < chunk

    # the daemon keeps working with its disk full: it answers and keeps checking in
    checkins = fleet.status("envoy3")["checkin"]["ok"]
    fleet.wait_for(
        lambda: fleet.status("envoy3")["checkin"]["ok"] >= checkins + 2,
        30,
        "envoy3 checking in twice more with a full disk",
        abort=died,
    )
    assert fleet.lab.is_running("envoy3")

    fleet.lab.resize_tmpfs("envoy3", GROWN_MIB)  # space is back
    fleet.wait_for(lambda: materialized_sha(fleet, "envoy3"), 120, "envoy3 completing", abort=died)
    assert materialized_sha(fleet, "envoy3") == sha
    done = blob_state(fleet, "envoy3", sha)
    assert done is not None and done["state"] == "materialized" and done["error"] == ""
    # resumed: only the chunks it did not keep were fetched after space came back
    assert sum(done["sources"].values()) == total - len(kept), (done, len(kept))
    assert not (swarm / ".blobs" / "partial" / sha).exists()
