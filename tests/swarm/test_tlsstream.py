"""TLSStream on real loopback sockets: batching, clean close, ragged EOF, refusals."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from fleet_helpers import make_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import pki
from vigo_swarm.tlsstream import TLSStream

pytestmark = pytest.mark.integration
PAYLOAD = bytes(range(256)) * 800  # 200 KiB: a dozen TLS records


async def pair(
    tmp: Path,
    nursery: trio.Nursery,
    serve: Callable[[TLSStream], Awaitable[None]],
    *,
    client_cert: bool = True,
) -> TLSStream:
    """A client TLSStream connected to a served one on 127.0.0.1 (``serve`` runs in
    ``nursery`` once the server side's handshake succeeded)."""
    ca = FleetCA.load_or_create(tmp / "ca")
    a, b = make_envoy(ca, tmp, "a"), make_envoy(ca, tmp, "b")
    server_ctx = pki.server_context(a.paths.cert, a.paths.key, a.paths.ca)
    extra = {"cert_file": b.paths.cert, "key_file": b.paths.key} if client_cert else {}
    client_ctx = pki.client_context(b.paths.ca, **extra)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]

    async def accept() -> None:
        stream = TLSStream(await listener.accept(), server_ctx, server_side=True)
        try:
            await stream.do_handshake()
        except ssl.SSLError:
            await stream.aclose()
            return
        nursery.start_soon(serve, stream)

    nursery.start_soon(accept)
    tcp = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    client = TLSStream(tcp, client_ctx, server_side=False, server_hostname="a")
    await client.do_handshake()
    return client


async def read_all(stream: TLSStream) -> tuple[bytes, int]:
    got, biggest = bytearray(), 0
    while data := await stream.receive_some(1 << 20):
        got += data
        biggest = max(biggest, len(data))
    return bytes(got), biggest


async def test_a_clean_close_reads_as_empty_and_every_byte_arrives(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async def serve(stream: TLSStream) -> None:
        await stream.send_all(PAYLOAD)
        await stream.aclose()  # close_notify

    client = await pair(tmp_path, nursery, serve)
    with trio.fail_after(10):  # a regression once spun here forever on close_notify
        got, _ = await read_all(client)
        assert got == PAYLOAD
        assert await client.receive_some() == b""  # and stays empty
    assert pki.identity_from_der(client.getpeercert(binary_form=True)).hostname == "a"
    await client.aclose()


async def test_a_ragged_eof_is_an_ssl_error_not_a_clean_end(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async def serve(stream: TLSStream) -> None:
        await stream.send_all(b"partial")
        await stream.transport_stream.aclose()  # no close_notify: truncation

    client = await pair(tmp_path, nursery, serve)
    with trio.fail_after(10):
        assert await client.receive_some() == b"partial"
        with pytest.raises(ssl.SSLError):
            await client.receive_some()
    await client.aclose()


async def test_without_a_client_certificate_the_handshake_fails_for_the_client(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async def serve(stream: TLSStream) -> None:  # never reached
        await stream.send_all(b"secret")

    with trio.fail_after(10), pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
        client = await pair(tmp_path, nursery, serve, client_cert=False)
        await client.receive_some()  # TLS 1.3: the refusal shows on the first read


async def test_receive_into_fills_a_buffer_and_reads_zero_after_close_notify(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    async def serve(stream: TLSStream) -> None:
        await stream.send_all(PAYLOAD)
        await stream.aclose()

    client = await pair(tmp_path, nursery, serve)
    buf = bytearray(len(PAYLOAD) + 100)
    view, size = memoryview(buf), 0
    with trio.fail_after(10):
        while n := await client.receive_into(view[size:]):
            size += n
        assert bytes(buf[:size]) == PAYLOAD
        assert await client.receive_into(view) == 0  # and stays closed
    await client.aclose()


async def test_receive_into_reports_a_ragged_eof(tmp_path: Path, nursery: trio.Nursery) -> None:
    async def serve(stream: TLSStream) -> None:
        await stream.send_all(b"partial")
        await stream.transport_stream.aclose()

    client = await pair(tmp_path, nursery, serve)
    buf = memoryview(bytearray(64))
    with trio.fail_after(10):
        assert await client.receive_into(buf) == len(b"partial")
        with pytest.raises(ssl.SSLError):
            await client.receive_into(buf)
    await client.aclose()
