"""Issue 3, done-when (netlab): a 64 MiB random file distributed with the real
`vigocli swarm filecast distribute` reaches a seeder + 8 envoys — every target symlink
resolves to a blob whose `sha256sum` equals the source's — and a revoke removes it
everywhere, also from an envoy partitioned during the revoke, once the partition heals.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netlab.fleet import Fleet
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root]

SIZE = 64 << 20
RECEIVERS = 8


def target_digest(fleet: Fleet, host: object) -> str | None:
    h = fleet.lab.host(host)  # type: ignore[arg-type]
    link = h.state_dir / "swarm" / "files" / "etc" / "motd"
    if not link.is_symlink():
        return None
    res = fleet.lab.exec(h, ["sha256sum", str(link)], check=False, timeout_s=60)
    return res.stdout.split()[0] if res.returncode == 0 else None


class NotYet(list[str]):
    """Falsy (when empty) stand-in for the envoys that do not report materialized yet."""

    def __bool__(self) -> bool:
        return False


def all_materialized(fleet: Fleet, envoys: int) -> bool | NotYet:
    """True once the server's status has every envoy materialized; otherwise a falsy list
    of the others' hostname, state and error, so a timeout says who is stuck and why."""
    (record,) = json.loads(fleet.vigocli("swarm", "filecast", "status", "--json"))["records"]
    rows = record["envoys"]
    behind = [
        f"{r['hostname']}: {r['state']} {r['error'] or ''}".strip()
        for r in rows
        if r["state"] != "materialized"
    ]
    if behind or len(rows) != envoys:
        return NotYet([*behind, f"{len(rows)} of {envoys} envoys listed"])
    return True


def test_filecast_reaches_every_envoy_and_a_revoke_reaches_a_partitioned_one(
    fleet_factory: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_factory(RECEIVERS + 1, agent_config={"checkin_interval_s": 2})
    fleet.enroll_all()
    seeder, receivers = fleet.lab.envoys[0], fleet.lab.envoys[1:]
    # the seeder sits beside the server: it reads the server's seed dir
    fleet.start_envoy(
        seeder, {"checkin_interval_s": 2, "seed_dirs": [str(fleet.data_dir / "seed")]}
    )
    for host in receivers:
        fleet.start_envoy(host)
    fleet.wait_until_confirmed(timeout_s=60)

    source = tmp_path / "motd.bin"
    source.write_bytes(os.urandom(SIZE))
    want = fleet.lab.exec(fleet.server, ["sha256sum", str(source)]).stdout.split()[0]
    out = json.loads(
        fleet.vigocli(
            "swarm", "filecast", "distribute", str(source), "--target", "etc/motd", "--json"
        )
    )
    assert out["blob"]["sha256"] == want

    everyone = [seeder, *receivers]
    fleet.wait_for(
        lambda: all(target_digest(fleet, h) == want for h in everyone),
        180,
        "etc/motd with the source's sha256 on every envoy",
    )
    status = json.loads(fleet.vigocli("swarm", "filecast", "status", "--json"))
    (record,) = status["records"]
    fleet.wait_for(
        lambda: all_materialized(fleet, len(everyone)),
        60,
        "every envoy reporting materialized at check-in",
    )
    assert record["target"] == "etc/motd"

    # most bytes came from neighbours: receivers name other receivers as sources
    peer_sourced = 0
    for host in receivers:
        for blob in fleet.status(host)["filecast"]:
            peer_sourced += sum(
                n for peer, n in blob["sources"].items() if peer != fleet.uuid(seeder)
            )
    assert peer_sourced > 0

    # revoke while the last receiver is cut off from everyone
    lonely = receivers[-1]
    fleet.lab.cut(lonely)
    fleet.vigocli("swarm", "filecast", "revoke", "--target", "etc/motd")
    others = [h for h in everyone if h is not lonely]
    fleet.wait_for(
        lambda: all(target_digest(fleet, h) is None for h in others),
        60,
        "the target gone from every connected envoy",
    )
    assert target_digest(fleet, lonely) == want  # it could not have heard yet
    fleet.lab.restore(lonely)
    fleet.wait_for(
        lambda: target_digest(fleet, lonely) is None, 60, "the target gone from the healed envoy"
    )
