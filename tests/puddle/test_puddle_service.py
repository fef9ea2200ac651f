"""The puddle service on real nodes over loopback mTLS: peer-pair, member-list sync,
passphrase rotation reaching every member, and every way a pairing is refused."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from fleet_helpers import FakeEnrolled, introduce, make_envoy, wait_until
from puddle_helpers import FAST, new_puddle, people, puddle_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import SwarmConfig, SwarmNode, http11, pki
from vigo_swarm.puddle import (
    PairingRefused,
    Person,
    PuddleDir,
    PuddleService,
    PuddleStateError,
    wrap,
)
from vigo_swarm.puddle.service import PAIR_PATH, STATE_PATH, b64, encode_state

pytestmark = pytest.mark.integration
UID = os.geteuid()


@dataclass
class Envoy:
    enrolled: FakeEnrolled
    node: SwarmNode
    puddle: PuddleService
    home: Path

    def read(self):  # type: ignore[no-untyped-def]
        return PuddleDir(Person(UID, os.getegid(), self.home)).read()


async def start_envoys(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, names: list[str], base: int
) -> list[Envoy]:
    envoys = []
    for i, name in enumerate(names):
        enrolled, node, service, home = puddle_envoy(ca, tmp_path, name, base + i)
        await nursery.start(node.run)
        await nursery.start(service.run)
        envoys.append(Envoy(enrolled, node, service, home))
    await introduce([e.node for e in envoys])
    return envoys


async def init_unlocked(e: Envoy) -> object:
    key, puddle = new_puddle(e.enrolled.uuid)
    await e.puddle.init(UID, encode_state(puddle))
    await e.puddle.unlock(UID, key.seed, 0)
    return key


async def test_pair_join_and_every_member_learns_the_list_and_the_new_wrapping(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b, c = await start_envoys(ca, tmp_path, nursery, ["a", "b", "c"], 170)
    key = await init_unlocked(a)
    codes = []
    for joiner in (b, c):
        code = (await a.puddle.pair(UID))["code"]
        codes.append(code)
        result = await joiner.puddle.join(UID, "a", code)
        assert result["puddle"] == key.public.hex()  # type: ignore[attr-defined]
        assert (await joiner.puddle.status(UID))["state"] == "locked"
    everyone = tuple(sorted(e.enrolled.uuid for e in (a, b, c)))
    await wait_until(lambda: all(e.read().members.members == everyone for e in (a, b, c)))
    assert {e.read().members.version for e in (a, b, c)} == {3}
    # the joiners hold the same wrapped identity, bit for bit
    assert a.read().identity.raw == b.read().identity.raw == c.read().identity.raw

    # rotate the passphrase on c (locked: only the new wrapping is needed): all follow
    rewrapped = wrap(key, "a brand new passphrase", wrap_version=2, kdf=FAST)  # type: ignore[arg-type]
    await c.puddle.rotate(UID, b64(rewrapped.raw))
    await wait_until(lambda: all(e.read().identity.raw == rewrapped.raw for e in (a, b, c)))
    with pytest.raises(PuddleStateError, match="not newer"):
        await c.puddle.rotate(UID, b64(rewrapped.raw))

    for code in codes:
        assert code not in caplog.text
        assert code.replace("-", "") not in caplog.text


async def test_wrong_codes_cancel_the_pairing_and_a_used_code_is_refused(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b, c = await start_envoys(ca, tmp_path, nursery, ["a", "b", "c"], 175)
    await init_unlocked(a)
    code = (await a.puddle.pair(UID))["code"]
    wrong = "0000-0000" if code != "0000-0000" else "0000-0001"
    for _ in range(4):
        with pytest.raises(PairingRefused) as info:
            await b.puddle.join(UID, "a", wrong)
        assert info.value.reason == "wrong_code"
    with pytest.raises(PairingRefused) as info:  # the fifth failure cancels the pairing
        await b.puddle.join(UID, "a", wrong)
    with pytest.raises(PairingRefused) as info:
        await b.puddle.join(UID, "a", code)
    assert info.value.reason == "cancelled"
    assert (await a.puddle.status(UID))["pairing"]["state"] == "cancelled"
    assert not PuddleDir(Person(UID, 0, b.home)).exists()  # b got nothing

    # a fresh code works once; reusing it is refused
    code2 = (await a.puddle.pair(UID))["code"]
    await b.puddle.join(UID, str(a.enrolled.uuid), code2)
    with pytest.raises(PairingRefused) as info:
        await c.puddle.join(UID, "a", code2)
    assert info.value.reason == "used"
    assert c.enrolled.uuid not in a.read().members
    for secret in (code, code2):
        assert secret not in caplog.text and secret.replace("-", "") not in caplog.text


async def test_pairing_needs_an_unlocked_puddle_and_join_needs_no_puddle(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, b = await start_envoys(ca, tmp_path, nursery, ["a", "b"], 180)
    with pytest.raises(PuddleStateError, match="no puddle"):
        await a.puddle.pair(UID)
    await init_unlocked(a)
    await a.puddle.lock(UID)
    with pytest.raises(PuddleStateError, match="locked"):
        await a.puddle.pair(UID)
    await init_unlocked(b)
    with pytest.raises(PuddleStateError, match="already have a puddle"):
        await b.puddle.join(UID, "a", "1234-5678")
    shutil.rmtree(b.home / ".vigo-puddle")
    with pytest.raises(PuddleStateError, match="no confirmed peer"):
        await b.puddle.join(UID, "nowhere", "1234-5678")


async def test_requests_without_a_fleet_certificate_are_refused(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    (a,) = await start_envoys(ca, tmp_path, nursery, ["a"], 183)
    await init_unlocked(a)
    code = (await a.puddle.pair(UID))["code"]
    body = json.dumps({"code": code}).encode()

    # no client certificate: TLS 1.3 refuses it; the client sees it on its first read
    anonymous = pki.client_context(ca.directory / "ca.pem")
    with pytest.raises(http11.ClientError):
        async with await http11.connect("127.0.0.183", a.node.port, anonymous) as conn:
            await conn.request("POST", PAIR_PATH, body=body)

    # a certificate from another CA (claiming nothing we trust)
    rogue_ca = FleetCA.load_or_create(tmp_path / "rogue-ca")
    rogue = make_envoy(rogue_ca, tmp_path / "rogue", "r")
    ctx = pki.client_context(
        ca.directory / "ca.pem", cert_file=rogue.paths.cert, key_file=rogue.paths.key
    )
    with pytest.raises(http11.ClientError):
        async with await http11.connect("127.0.0.183", a.node.port, ctx) as conn:
            await conn.request("POST", PAIR_PATH, body=body)

    # the server lite's certificate is from the fleet CA but not for client auth (EKU
    # serverAuth only): TLS refuses it (admission would answer 403 were it let through)
    key = pki.generate_key()
    issued = ca.issue_server(["127.0.0.1"], key)
    pki.write_secret_file(tmp_path / "srv.key", pki.key_to_pem(key))
    pki.write_public_file(tmp_path / "srv.pem", issued.pem)
    ctx = pki.client_context(
        ca.directory / "ca.pem", cert_file=tmp_path / "srv.pem", key_file=tmp_path / "srv.key"
    )
    with pytest.raises(http11.ClientError):
        async with await http11.connect("127.0.0.183", a.node.port, ctx) as conn:
            await conn.request("POST", PAIR_PATH, body=body)
    assert a.node.server is not None and a.node.server.stats.requests == 0

    # none of that touched the pairing: no failure counted, the code still works
    status = await a.puddle.status(UID)
    assert status["pairing"] == {
        "state": "open",
        "expires_in_s": pytest.approx(300, abs=60),
        "failures": 0,
    }
    assert a.puddle.book.redeem(code, trio.current_time()) == UID


async def test_a_non_member_gets_no_state(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    a, d = await start_envoys(ca, tmp_path, nursery, ["a", "d"], 186)
    await init_unlocked(a)
    stolen = encode_state(a.read())  # pretend d learned the public state somehow
    peer = next(p for p in d.node.peers() if p.uuid == a.enrolled.uuid)
    async with await d.node.dial(peer) as conn:
        resp = await conn.request("POST", STATE_PATH, body=json.dumps(stolen).encode())
        assert resp.status == 403 and b"identity" not in resp.body
        resp = await conn.request("POST", STATE_PATH, body=b'{"identity": "x", "members": 1}')
        assert resp.status == 400
    assert a.puddle.stats.state_refusals == 2


async def test_an_expired_code_is_refused(
    ca: FleetCA, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Virtual time: the pairing handler on an envoy whose code is 5 minutes old."""
    enrolled = make_envoy(ca, tmp_path, "a")
    node = SwarmNode(enrolled.node_identity, SwarmConfig(multicast_enabled=False))
    home = tmp_path / "home"
    home.mkdir()
    service = PuddleService(node, tmp_path / "puddles.json", people(home))
    key, puddle = new_puddle(enrolled.uuid)
    await service.init(UID, encode_state(puddle))
    await service.unlock(UID, key.seed, 0)
    joiner = pki.PeerIdentity(uuid.uuid4(), 7, "b", False, dt.datetime.now(dt.UTC))

    def request(code: str) -> http11.Request:
        body = json.dumps({"code": code}).encode()
        return http11.Request("POST", PAIR_PATH, {}, {}, body, joiner, "127.0.0.9")

    code = (await service.pair(UID))["code"]
    await trio.sleep(299)
    fresh = (await service.status(UID))["pairing"]
    assert fresh["state"] == "open" and fresh["expires_in_s"] == pytest.approx(1, abs=0.01)
    await trio.sleep(1)
    with pytest.raises(http11.HTTPError) as info:
        await service._pair_handler(request(code))
    assert (info.value.status, info.value.code) == (403, "pairing_expired")
    assert joiner.uuid not in PuddleDir(Person(UID, 0, home)).read().members

    # the idle timeout runs on the same clock: a key unused for its timeout is forgotten
    await service.unlock(UID, key.seed, idle_timeout_s=60)
    code = (await service.pair(UID))["code"]  # a use
    await trio.sleep(59)
    resp = await service._pair_handler(request(code))  # a use: the idle timer restarts
    assert resp.status == 200
    await trio.sleep(59)
    assert (await service.status(UID))["state"] == "unlocked"
    await trio.sleep(1)
    assert (await service.status(UID))["state"] == "locked"
