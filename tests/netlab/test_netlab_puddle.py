"""Issue 4 (puddle, peer-pair) on netlab: alice's puddle made on A, B and C joined with
pairing codes through the real CLI, all three showing the same signed member list; D is
in the fleet but not the puddle; a passphrase rotated on C opens the key on A and B; no
pairing code appears in any envoy's log (debug level)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netlab.fleet import Fleet, console_script
from netlab.pytest_fixtures import FleetFactory, requires_root

pytestmark = [pytest.mark.netlab, requires_root, pytest.mark.timeout(300)]

PASS = "alice's lab passphrase\n"


def puddle(fleet: Fleet, host: object, *argv: str, stdin: str | None = None) -> str:
    h = fleet.lab.host(host)  # type: ignore[arg-type]
    full = [str(console_script("vigo")), "swarm", "puddle", *argv, "--state-dir", str(h.state_dir)]
    return fleet.lab.exec(h, full, input_text=stdin, timeout_s=60).stdout


def members_of(fleet: Fleet, host: object) -> tuple[int, list[str]]:
    out: dict[str, Any] = json.loads(puddle(fleet, host, "members", "--json"))
    return out["version"], [m["uuid"] for m in out["members"]]


def test_three_envoys_pair_into_one_puddle(fleet_factory: FleetFactory) -> None:
    fleet = fleet_factory(4, agent_config={"checkin_interval_s": 2, "log_level": "debug"})
    fleet.enroll_all()
    a, b, c, d = fleet.lab.envoys
    for h in fleet.lab.envoys:  # one machine, many envoys: each its own homes
        fleet.start_envoy(h, {"home_root": str(h.state_dir / "home")})
    fleet.wait_until_confirmed(timeout_s=60)

    puddle(fleet, a, "init", "--passphrase-fd", "0", stdin=PASS)
    codes = []
    for joiner in (b, c):
        code = json.loads(puddle(fleet, a, "pair", "--json"))["code"]
        codes.append(code)
        joined = json.loads(puddle(fleet, joiner, "join", a.name, code, "--json"))
        assert fleet.uuid(joiner) in [m["uuid"] for m in joined["members"]]

    want = sorted(fleet.uuid(h) for h in (a, b, c))
    fleet.wait_for(
        lambda: all(members_of(fleet, h) == (3, want) for h in (a, b, c)),
        60,
        "A, B and C to show the same 3-member list",
    )
    pubkeys = {puddle(fleet, h, "pubkey") for h in (a, b, c)}
    assert len(pubkeys) == 1 and next(iter(pubkeys)).startswith("ssh-ed25519 ")
    assert json.loads(puddle(fleet, d, "status", "--json"))["state"] == "none"

    # a passphrase rotated on C reaches A and B: the old one stops working there
    puddle(fleet, c, "rotate-passphrase", "--passphrase-fd", "0", stdin=PASS + "rotated on C\n")

    def wrap_versions() -> list[int]:
        return [json.loads(puddle(fleet, h, "status", "--json"))["wrap_version"] for h in (a, b)]

    fleet.wait_for(lambda: wrap_versions() == [2, 2], 60, "the new wrapping on A and B")
    argv = [str(console_script("vigo")), "swarm", "puddle", "unlock", "--passphrase-fd", "0"]
    argv += ["--state-dir", str(b.state_dir)]
    old = fleet.lab.exec(b, argv, input_text=PASS, check=False, timeout_s=60)
    assert old.returncode == 4 and "wrong passphrase" in old.stderr
    puddle(fleet, b, "unlock", "--passphrase-fd", "0", stdin="rotated on C\n")
    assert json.loads(puddle(fleet, b, "status", "--json"))["state"] == "unlocked"

    logs = {h.name: h.log_file.read_text(errors="replace") for h in fleet.lab.envoys}
    # the logs did record the pairing steps (so the absence below means something)
    assert logs[a.name].count("pairing opened") == 2
    assert all("joined puddle" in logs[h.name] for h in (b, c))
    for h in fleet.lab.envoys:
        log = logs[h.name]
        for code in codes:
            assert code not in log and code.replace("-", "") not in log, h.name
