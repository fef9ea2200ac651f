"""Test helpers: a real fleet CA and envoy state dirs as enrollment leaves them.

Used by swarm/agent integration tests that need identities without running the
server lite; the enrollment path itself is tested against a real server in tests/server.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from vigo_agent.paths import StatePaths
from vigo_server_lite.ca import FleetCA
from vigo_swarm import DiscoveryConfig, NodeIdentity, ServerHint, SwarmConfig, SwarmNode, pki


@dataclass(frozen=True)
class FakeEnrolled:
    name: str
    uuid: uuid.UUID
    paths: StatePaths
    serial: int

    @property
    def node_identity(self) -> NodeIdentity:
        p = self.paths
        return NodeIdentity(self.uuid, self.name, p.cert, p.key, p.ca)


def make_envoy(
    ca: FleetCA,
    root: Path,
    name: str,
    *,
    server_url: str = "https://127.0.0.1:1",
    not_before: dt.datetime | None = None,
    validity: dt.timedelta = dt.timedelta(days=1),
) -> FakeEnrolled:
    paths = StatePaths(root / name)
    key = pki.generate_key()
    ident = uuid.uuid4()
    issued = ca.issue_envoy(
        pki.make_csr(key, name), ident, name, not_before=not_before, validity=validity
    )
    pki.write_secret_file(paths.key, pki.key_to_pem(key))
    pki.write_public_file(paths.cert, issued.pem)
    pki.write_public_file(paths.ca, ca.cert_pem)
    pki.write_public_file(
        paths.envoy_json,
        json.dumps(
            {
                "uuid": str(ident),
                "hostname": name,
                "server_url": server_url,
                "authority_public_key": ca.authority_public_hex,
                "checkin_interval_s": 30,
                "enrolled_at": "test",
                "certificate_serial": format(issued.serial, "x"),
            }
        ).encode(),
    )
    return FakeEnrolled(name, ident, paths, issued.serial)


def loopback_node(env: FakeEnrolled, n: int, mport: int | None) -> SwarmNode:
    """A swarm node on 127.0.0.<n>, port 0; multicast on port ``mport`` (None: off)."""
    addr = f"127.0.0.{n}"
    return SwarmNode(
        env.node_identity,
        SwarmConfig(
            listen_address=addr,
            port=0,
            advertise_addresses=(addr,),
            multicast_enabled=mport is not None,
            discovery=DiscoveryConfig(
                port=mport or 1, interface_address=addr, announce_interval_s=0.5
            ),
        ),
    )


async def introduce(nodes: Sequence[SwarmNode], timeout_s: float = 20.0) -> None:
    """Give every started node server hints for all the others; wait until all confirmed."""
    hints = [ServerHint(n.identity.uuid, n.identity.hostname, n.advertise, n.port) for n in nodes]
    for n in nodes:
        n.add_server_hints(hints)
    await wait_until(lambda: all(len(n.peers()) == len(nodes) - 1 for n in nodes), timeout_s)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; TooSlowError after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.05)
