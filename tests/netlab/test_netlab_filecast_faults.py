"""Issue 3, done-when (netlab, rate-capped links so transfers take seconds):
- multi-source: the seeder is killed once a receiver holds every chunk; all complete;
- resume: a receiver is `kill -9`ed mid-transfer; after restart it completes, and the
  chunks it had verified before the kill are not fetched again.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from netlab.fleet import Fleet
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root]

SIZE = 24 << 20
RATE_MBIT = 40.0  # ~5 s for one copy from one peer


def distribute(fleet: Fleet, tmp_path: Path) -> str:
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(SIZE))
    out = fleet.vigocli(
        "swarm", "filecast", "distribute", str(source), "--target", "data/blob", "--json"
    )
    sha: str = json.loads(out)["blob"]["sha256"]
    return sha


def blob_state(fleet: Fleet, host: Any, sha: str) -> dict[str, Any] | None:
    try:
        blobs = fleet.status(host).get("filecast", [])
    except Exception:  # daemon restarting
        return None
    return next((b for b in blobs if b["blob"] == sha), None)


def materialized(fleet: Fleet, host: Any) -> bool:
    link = fleet.lab.host(host).state_dir / "swarm" / "files" / "data" / "blob"
    return link.is_symlink() and link.exists()


def start(fleet_factory: FleetFactory, receivers: int, rate_mbit: float = RATE_MBIT) -> Fleet:
    fleet = fleet_factory(
        receivers + 1, agent_config={"checkin_interval_s": 1}, rate_mbit=rate_mbit
    )
    fleet.enroll_all()
    seeder, *rest = fleet.lab.envoys
    fleet.start_envoy(
        seeder, {"checkin_interval_s": 1, "seed_dirs": [str(fleet.data_dir / "seed")]}
    )
    for host in rest:
        fleet.start_envoy(host)
    fleet.wait_until_confirmed(timeout_s=60)
    return fleet


def test_receivers_complete_after_the_seeder_dies(
    fleet_factory: FleetFactory, tmp_path: Path
) -> None:
    fleet = start(fleet_factory, 4)
    seeder, *receivers = fleet.lab.envoys
    sha = distribute(fleet, tmp_path)

    def one_complete() -> bool:
        return any(materialized(fleet, h) for h in receivers)

    fleet.wait_for(one_complete, 120, "one receiver holding every chunk")
    fleet.lab.kill9(seeder)  # from now on only the receivers hold the blob
    fleet.wait_for(
        lambda: all(materialized(fleet, h) for h in receivers),
        180,
        "every receiver completing without the seeder",
    )
    for host in receivers:
        state = blob_state(fleet, host, sha)
        assert state is not None and state["state"] == "materialized"


def test_kill_9_mid_transfer_resumes_without_refetching(
    fleet_factory: FleetFactory, tmp_path: Path
) -> None:
    # slower links (~10 s for the copy) so the poll reliably sees it partway through
    fleet = start(fleet_factory, 1, rate_mbit=RATE_MBIT / 2)
    _seeder, victim = fleet.lab.envoys
    sha = distribute(fleet, tmp_path)
    total = 0
    have_before = 0

    def about_half() -> bool:
        nonlocal total, have_before
        state = blob_state(fleet, victim, sha)
        if state is None or state["state"] != "partial":
            return False
        total, have_before = state["total_chunks"], state["have_chunks"]
        return have_before >= total // 3

    fleet.wait_for(about_half, 120, "the victim a third or more of the way")
    fleet.lab.kill(victim, signal.SIGKILL)
    assert not materialized(fleet, victim)  # nothing partial is ever visible
    fleet.start_envoy(victim)
    fleet.wait_for(lambda: materialized(fleet, victim), 180, "the victim completing")
    state = blob_state(fleet, victim, sha)
    assert state is not None
    fetched_after_restart = sum(state["sources"].values())
    # chunks verified before the kill were not fetched again
    assert fetched_after_restart <= total - have_before, (fetched_after_restart, total, have_before)
    link = fleet.lab.host(victim).state_dir / "swarm" / "files" / "data" / "blob"
    res = fleet.lab.exec(victim, ["sha256sum", str(link)])
    assert res.stdout.split()[0] == sha
