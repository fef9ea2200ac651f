"""Manifest gossip between real nodes on loopback mTLS: convergence through multicast
version mismatch, refusal of records an envoy signed, and no resurrection by a stale peer."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import trio
from disk_helpers import fill
from fleet_helpers import loopback_node, make_envoy
from manifest_helpers import ENVOY_KEY, SERVER_KEY, fields

from vigo_server_lite.ca import FleetCA
from vigo_swarm import SwarmConfig, SwarmNode, http11, pki
from vigo_swarm.gossip import PUSH_PATH, GossipConfig, ManifestGossip
from vigo_swarm.hlc import pack
from vigo_swarm.manifest import sign, to_wire, tombstone_fields
from vigo_swarm.manifest_store import ManifestStore

pytestmark = pytest.mark.integration
AUTH = {"server": SERVER_KEY.verify_key.encode()}


def now_stamp(offset_ms: int = 0) -> int:
    return pack(int(time.time() * 1000) + offset_ms, 0)


async def start(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, n: int, mport: int, name: str
) -> tuple[SwarmNode, ManifestGossip]:
    env = make_envoy(ca, tmp_path, name)
    node = loopback_node(env, n, mport)
    store = ManifestStore(tmp_path / f"{name}-manifest.db", AUTH)
    gossip = ManifestGossip(node, store, GossipConfig(min_gap_s=0.2, anti_entropy_interval_s=1))
    await nursery.start(node.run)
    await nursery.start(gossip.run)
    return node, gossip


async def wait_until(pred, what: str, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)


@pytest.fixture
def mport() -> int:
    return 40000 + uuid.uuid4().int % 20000


async def test_three_nodes_converge_and_a_tombstone_wins(
    tmp_path: Path, nursery: trio.Nursery, mport: int
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    nodes = [await start(ca, tmp_path, nursery, 60 + i, mport, f"g{i}") for i in range(3)]
    await wait_until(lambda: all(len(n.peers()) == 2 for n, _ in nodes), "discovery")

    add = sign(fields("filecast/motd", hlc=now_stamp(-5000)), SERVER_KEY)
    assert await nodes[0][1].merge([add], "test") == 1
    await wait_until(
        lambda: all(g.manifest.get("filecast/motd") == add for _, g in nodes),
        "the record reaching every node",
    )
    assert len({g.manifest.version for _, g in nodes}) == 1

    gone = sign(
        tombstone_fields("filecast/motd", hlc=now_stamp(-1000), origin="server"), SERVER_KEY
    )
    await nodes[1][1].merge([gone], "test")
    await wait_until(
        lambda: all(g.manifest.get("filecast/motd") == gone for _, g in nodes),
        "the tombstone reaching every node",
    )
    # a stale peer pushing the old add cannot bring it back
    assert await nodes[2][1].merge([add], "stale peer") == 0
    assert nodes[2][1].manifest.get("filecast/motd") == gone


async def test_records_signed_by_an_envoy_or_forged_are_refused(
    tmp_path: Path, nursery: trio.Nursery, mport: int
) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    node, gossip = await start(ca, tmp_path, nursery, 70, mport, "victim")
    attacker = make_envoy(ca, tmp_path, "attacker")  # a real fleet member
    by_envoy = sign(fields("filecast/evil", hlc=now_stamp(), origin="server"), ENVOY_KEY)
    forged = to_wire(sign(fields("filecast/forged", hlc=now_stamp()), SERVER_KEY))
    forged["targets"] = ["etc/shadow"]  # signature no longer covers the fields
    future = sign(fields("filecast/future", hlc=now_stamp(3_600_000)), SERVER_KEY)
    ctx = pki.client_context(
        attacker.paths.ca, cert_file=attacker.paths.cert, key_file=attacker.paths.key
    )
    async with await http11.connect("127.0.0.70", node.port, ctx) as conn:
        body = json.dumps(
            {"records": [to_wire(by_envoy), forged, to_wire(future), {"key": "x"}, "garbage"]}
        ).encode()
        resp = await conn.request("POST", PUSH_PATH, body=body)
        assert resp.status == 200 and resp.json()["accepted"] == 0
        for bad in (b"{", b"[]", b'{"records": 5}'):
            assert (await conn.request("POST", PUSH_PATH, body=bad)).status == 400
    assert len(gossip.manifest) == 0
    assert gossip.stats.rejected == 5


async def test_a_full_disk_refuses_the_batch_without_stopping_gossip(
    tmp_path: Path, small_fs: Path
) -> None:
    """The database cannot store a record: nothing is merged (in memory neither), the
    failure is counted, and once space is back the same records merge."""
    ca = FleetCA.load_or_create(tmp_path / "ca")
    node = SwarmNode(make_envoy(ca, tmp_path, "full").node_identity, SwarmConfig(port=0))
    store = ManifestStore(small_fs / "manifest.db", AUTH)
    gossip = ManifestGossip(node, store)
    big = [sign(fields(f"filecast/{i}", hlc=now_stamp()), SERVER_KEY) for i in range(200)]
    filler = fill(small_fs / "filler")
    assert await gossip.merge(big, "peer") == 0
    assert gossip.stats.store_errors == 1 and "cannot write" in gossip.stats.last_store_error
    assert len(store.manifest) == 0
    filler.unlink()
    assert await gossip.merge(big, "peer") == 200  # the next sync offers them again
    assert len(store.manifest) == 200
    store.close()
