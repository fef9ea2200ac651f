"""The peer channel refuses everyone but verified, unrevoked envoys — shown with real
mTLS sockets on loopback, and with certificates made and sent by openssl and curl."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from fleet_helpers import make_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import DiscoveryConfig, ServerHint, SwarmConfig, SwarmNode, http11, pki
from vigo_swarm.announce import Announcement

pytestmark = pytest.mark.integration
needs_tools = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")),
    reason="curl and openssl are needed (./run installs them)",
)


def loopback_config(n: int, *, multicast: bool = False, mport: int = 0) -> SwarmConfig:
    addr = f"127.0.0.{n}"
    return SwarmConfig(
        listen_address=addr,
        port=0,
        advertise_addresses=(addr,),
        multicast_enabled=multicast,
        discovery=DiscoveryConfig(port=mport, interface_address=addr, announce_interval_s=0.5),
    )


@pytest.fixture
async def node_a(ca: FleetCA, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[SwarmNode]:
    node = SwarmNode(make_envoy(ca, tmp_path, "a").node_identity, loopback_config(2))
    await nursery.start(node.run)
    yield node


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@needs_tools
async def test_curl_with_a_fleet_certificate_is_answered(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    b = make_envoy(ca, tmp_path, "b")
    res = await curl_as(node_a, ca, "--cert", str(b.paths.cert), "--key", str(b.paths.key))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["you"] == str(b.uuid)


async def curl_as(node: SwarmNode, ca: FleetCA, *extra: str) -> subprocess.CompletedProcess[bytes]:
    """curl pinned to the fleet CA; the node's certificate names host "a", resolved here."""
    argv = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(ca.directory / "ca.pem"),
        "--http1.1",
        "--resolve",
        f"a:{node.port}:127.0.0.2",
        *extra,
        f"https://a:{node.port}/swarm/v1/identity",
    ]
    return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


@needs_tools
async def test_curl_without_client_certificate_is_refused(node_a: SwarmNode, ca: FleetCA) -> None:
    res = await curl_as(node_a, ca)
    assert res.returncode != 0
    assert b"uuid" not in res.stdout
    assert node_a.server is not None and node_a.server.stats.requests == 0


@needs_tools
async def test_curl_with_certificate_from_another_ca_is_refused(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    """openssl makes a rogue CA and a certificate claiming a real envoy's UUID."""
    b = make_envoy(ca, tmp_path, "b")
    d = tmp_path / "rogue"
    d.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=rogue CA",
        "-days",
        "2",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "evil.key",
        "-out",
        "evil.csr",
        "-subj",
        "/CN=b",
        cwd=d,
    )
    (d / "ext.cnf").write_text(f"subjectAltName=URI:urn:vigo:envoy:{b.uuid},DNS:b\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "evil.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "evil.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    res = await curl_as(node_a, ca, "--cert", str(d / "evil.pem"), "--key", str(d / "evil.key"))
    assert res.returncode != 0
    assert b"uuid" not in res.stdout
    assert node_a.server is not None and node_a.server.stats.requests == 0
    assert node_a.server.stats.handshake_failures >= 1


@needs_tools
async def test_expired_certificate_is_refused(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    old = make_envoy(
        ca,
        tmp_path,
        "old",
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
        validity=dt.timedelta(days=1),
    )
    res = await curl_as(node_a, ca, "--cert", str(old.paths.cert), "--key", str(old.paths.key))
    assert res.returncode != 0
    assert node_a.server is not None and node_a.server.stats.requests == 0
    ctx = pki.client_context(old.paths.ca, cert_file=old.paths.cert, key_file=old.paths.key)
    with pytest.raises(http11.ClientError):
        async with await http11.connect("127.0.0.2", node_a.port, ctx) as conn:
            await conn.request("GET", "/swarm/v1/identity")


async def test_revoked_certificate_is_refused_even_on_an_open_connection(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    b = make_envoy(ca, tmp_path, "b")
    ctx = pki.client_context(b.paths.ca, cert_file=b.paths.cert, key_file=b.paths.key)
    async with await http11.connect("127.0.0.2", node_a.port, ctx) as conn:
        assert (await conn.request("GET", "/swarm/v1/identity")).status == 200
        node_a.apply_revocations([b.serial], [])
        resp = await conn.request("GET", "/swarm/v1/identity")
        assert resp.status == 403
        assert "revoked" in resp.json()["error"]["message"]
    if shutil.which("curl"):
        res = await curl_as(node_a, ca, "--cert", str(b.paths.cert), "--key", str(b.paths.key))
        assert b"certificate revoked" in res.stdout


async def test_server_lite_certificate_may_not_use_the_peer_channel(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    key = pki.generate_key()
    issued = ca.issue_server(["127.0.0.1"], key)
    pki.write_secret_file(tmp_path / "srv.key", pki.key_to_pem(key))
    (tmp_path / "srv.pem").write_bytes(issued.pem)
    ctx = pki.client_context(
        ca.directory / "ca.pem", cert_file=tmp_path / "srv.pem", key_file=tmp_path / "srv.key"
    )
    # Its certificate is not for client auth (EKU serverAuth only): TLS refuses it,
    # and were it let through, admission would answer 403. Either way: no answer.
    try:
        async with await http11.connect("127.0.0.2", node_a.port, ctx) as conn:
            assert (await conn.request("GET", "/swarm/v1/identity")).status == 403
    except http11.ClientError:
        pass
    assert node_a.server is not None and node_a.server.stats.requests == 0


async def test_dialling_the_wrong_envoy_is_detected_before_any_request(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    b = make_envoy(ca, tmp_path, "b")
    ctx = pki.client_context(b.paths.ca, cert_file=b.paths.cert, key_file=b.paths.key)
    with pytest.raises(http11.PeerIdentityMismatch):
        await http11.connect("127.0.0.2", node_a.port, ctx, expect_uuid=uuid.uuid4())
    assert node_a.server is not None and node_a.server.stats.requests == 0


async def wait_until(predicate, what: str, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.05)


async def test_server_hints_confirm_peers_and_spoofed_hints_do_not(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    envoys = [make_envoy(ca, tmp_path, f"e{i}") for i in range(3)]
    nodes = [SwarmNode(e.node_identity, loopback_config(10 + i)) for i, e in enumerate(envoys)]
    for node in nodes:
        await nursery.start(node.run)
    hints = [
        ServerHint(e.uuid, e.name, (f"127.0.0.{10 + i}",), n.port)
        for i, (e, n) in enumerate(zip(envoys, nodes, strict=True))
    ]
    ghost = ServerHint(uuid.uuid4(), "ghost", ("127.0.0.10",), nodes[0].port)  # wrong cert there
    for node in nodes:
        node.add_server_hints([*hints, ghost])
    await wait_until(lambda: all(len(n.peers()) == 2 for n in nodes), "each sees the other two")
    await wait_until(lambda: nodes[1].stats.spoofed >= 1, "the ghost was probed")
    assert ghost.uuid not in {p.uuid for n in nodes for p in n.peers()}


async def test_multicast_on_loopback_finds_peers_and_survives_garbage(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Real multicast datagrams on lo; garbage and spoofed announcements change nothing."""
    mport = 40000 + (uuid.uuid4().int % 20000)
    envoys = [make_envoy(ca, tmp_path, f"m{i}") for i in range(3)]
    nodes = [
        SwarmNode(e.node_identity, loopback_config(20 + i, multicast=True, mport=mport))
        for i, e in enumerate(envoys)
    ]
    for node in nodes:
        await nursery.start(node.run)
    await wait_until(lambda: all(len(n.peers()) == 2 for n in nodes), "multicast discovery")
    # now hostile datagrams from 127.0.0.30, on the same group and port
    # A spoof sent from m1's address, naming an unknown UUID and m1's peer port: the
    # probe reaches m1, whose certificate names m1, so nobody confirms the spoof.
    spoof_uuid = uuid.uuid4()
    garbage = [
        b"",
        b"\x00" * 3000,
        b"{",
        b'{"vigo":"swarm/1"}',
        b"[" * 1000,
        Announcement(spoof_uuid, ("127.0.0.21",), nodes[1].port, 1).encode(),
    ]
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        import socket as pysocket

        sock.setsockopt(
            pysocket.IPPROTO_IP, pysocket.IP_MULTICAST_IF, pysocket.inet_aton("127.0.0.21")
        )
        await sock.bind(("127.0.0.21", 0))
        for datagram in garbage * 3:
            # the kernel may refuse the 3000-byte one on some setups; fine
            with contextlib.suppress(OSError):
                await sock.sendto(datagram, ("224.0.0.42", mport))
    await wait_until(
        lambda: all(n._discovery and n._discovery.stats.bad_packets >= 9 for n in nodes),
        "garbage counted",
    )
    await wait_until(lambda: all(n.stats.spoofed >= 1 for n in nodes), "spoofs probed")
    for n in nodes:
        confirmed = {p.uuid for p in n.peers()}
        assert spoof_uuid not in confirmed
        assert len(confirmed) == 2


async def test_an_inbound_probe_lets_the_dialled_side_confirm_back(
    ca: FleetCA, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Only A is told about B; B learns of A from A's verified probe, and probes back."""
    a, b = make_envoy(ca, tmp_path, "a"), make_envoy(ca, tmp_path, "b")
    na, nb = (
        SwarmNode(a.node_identity, loopback_config(40)),
        SwarmNode(b.node_identity, loopback_config(41)),
    )
    await nursery.start(na.run)
    await nursery.start(nb.run)
    na.add_server_hints([ServerHint(b.uuid, "b", ("127.0.0.41",), nb.port)])
    await wait_until(lambda: [p.uuid for p in nb.peers()] == [a.uuid], "B confirms A")
    (view,) = nb.peers()
    assert view.sources == ("inbound",) and view.address == "127.0.0.40"


async def test_a_connection_is_reusable_only_after_a_whole_answer_without_close(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    from fleet_helpers import loopback_node, make_envoy

    from vigo_server_lite.ca import FleetCA
    from vigo_swarm import ServerHint, http11

    ca = FleetCA.load_or_create(tmp_path / "ca")
    a, b = (loopback_node(make_envoy(ca, tmp_path, f"r{i}"), 110 + i, None) for i in range(2))

    async def slow(request: http11.Request) -> http11.Response:
        await trio.sleep(30)
        return http11.Response()

    async def closing(request: http11.Request) -> http11.Response:
        return http11.Response(headers=[("connection", "close")])

    a.router.add("GET", "/slow", slow, max_body=0)
    a.router.add("GET", "/closing", closing, max_body=0)
    for node in (a, b):
        await nursery.start(node.run)
    b.add_server_hints([ServerHint(a.identity.uuid, "a", (a.config.listen_address,), a.port)])
    with trio.fail_after(20):
        while not b.peers():
            await trio.sleep(0.02)
    peer = b.peers()[0]
    async with await b.dial(peer) as conn:
        assert conn.reusable  # nothing asked yet
        assert (await conn.request("GET", "/swarm/v1/identity")).status == 200
        assert conn.reusable
        with trio.move_on_after(0.2):
            await conn.request("GET", "/slow")
        assert not conn.reusable  # its answer may still come: another request would misread it
    async with await b.dial(peer) as conn:
        await conn.request("GET", "/closing")
        assert not conn.reusable


async def test_a_second_dial_resumes_the_tls_session_and_the_peer_is_still_proven(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    b = make_envoy(ca, tmp_path, "b")
    ctx = pki.client_context(b.paths.ca, cert_file=b.paths.cert, key_file=b.paths.key)
    sessions = http11.TLSSessions()
    a_uuid = node_a.identity.uuid
    a_identity = pki.identity_from_cert(
        x509.load_pem_x509_certificate(node_a.identity.cert_file.read_bytes())
    )
    for dial in range(3):
        async with await http11.connect(
            "127.0.0.2", node_a.port, ctx, expect_uuid=a_uuid, sessions=sessions
        ) as conn:
            resp = await conn.request("GET", "/swarm/v1/identity")
            assert resp.status == 200 and resp.json()["you"] == str(b.uuid)  # b, proven
            assert conn.peer == a_identity
        assert sessions.resumed == dial  # the first handshake is a full one
    # another envoy at that address and port is not the one the session proved
    with pytest.raises(http11.PeerIdentityMismatch):
        await http11.connect("127.0.0.2", node_a.port, ctx, expect_uuid=b.uuid, sessions=sessions)


async def test_a_resumed_session_with_a_certificate_expired_since_is_refused(
    node_a: SwarmNode, ca: FleetCA, tmp_path: Path
) -> None:
    """OpenSSL checks a certificate's expiry in a full handshake only; the peer channel
    checks it on every connection, so a session proven before the expiry does not
    outlive it."""
    now = dt.datetime.now(dt.UTC)
    short = make_envoy(
        ca,
        tmp_path,
        "short",
        not_before=now - dt.timedelta(seconds=1),
        validity=dt.timedelta(seconds=4),
    )
    ctx = pki.client_context(short.paths.ca, cert_file=short.paths.cert, key_file=short.paths.key)
    sessions = http11.TLSSessions()
    async with await http11.connect("127.0.0.2", node_a.port, ctx, sessions=sessions) as conn:
        assert (await conn.request("GET", "/swarm/v1/identity")).status == 200
    expiry = x509.load_pem_x509_certificate(short.paths.cert.read_bytes()).not_valid_after_utc
    with trio.fail_after(15):
        while dt.datetime.now(dt.UTC) <= expiry:
            await trio.sleep(0.1)
    async with await http11.connect("127.0.0.2", node_a.port, ctx, sessions=sessions) as conn:
        assert sessions.resumed == 1
        resp = await conn.request("GET", "/swarm/v1/identity")
    assert resp.status == 403 and "expired" in resp.json()["error"]["message"]


def test_a_session_is_not_kept_past_the_peers_certificate_or_its_age() -> None:
    from vigo_swarm.pki import PeerIdentity

    class Session:
        has_ticket = True

    def peer(left_s: float) -> PeerIdentity:
        not_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left_s)
        return PeerIdentity(None, 1, None, True, not_after)

    async def main() -> None:
        sessions = http11.TLSSessions(max_entries=2, max_age_s=100)
        sessions.put(("h", 1, None), Session(), peer(3600))  # type: ignore[arg-type]
        sessions.put(("h", 2, None), Session(), peer(-1))  # type: ignore[arg-type]
        assert sessions.get(("h", 1, None)) is not None and sessions.get(("h", 2, None)) is None
        sessions.put(("h", 3, None), Session(), peer(3600))  # type: ignore[arg-type]
        sessions.put(("h", 4, None), Session(), peer(3600))  # type: ignore[arg-type]
        assert sessions.get(("h", 1, None)) is None  # the oldest went: at most 2
        await trio.sleep(101)
        assert sessions.get(("h", 4, None)) is None  # older than max_age_s

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
