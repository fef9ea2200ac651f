"""The HTTP/1.1 client: ``connect`` to a peer, then ``HTTPSConnection.request``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import socket as _socket
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import trio

from .. import pki
from ..pki import IdentityError, PeerIdentity, identity_from_peercert
from ..tlsstream import TLSStream
from ._wire import BODY_LOWAT_BYTES, MAX_HEADER_BYTES, TLS_RECORD_SLACK, next_event

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- client


class ClientError(Exception):
    """A request could not be completed (connect, TLS, framing or timeout)."""


class PeerIdentityMismatch(ClientError):
    """The TLS peer verified, but its certificate names another envoy."""


@dataclass(frozen=True, slots=True)
class ClientResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes  # b"" when the body went into the caller's buffer (``view``)
    view: memoryview | None = None  # that body, in the caller's ``into`` buffer

    @property
    def error_code(self) -> str:
        """The ``error.code`` of an error answer ("" if the body is not one)."""
        try:
            code = json.loads(self.body)["error"]["code"]
        except (ValueError, TypeError, KeyError):
            return ""
        return code if isinstance(code, str) else ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClientError(f"response is not valid JSON: {exc}") from exc


def _says_close(event: h11.Response) -> bool:
    return any(name == b"connection" and b"close" in value.lower() for name, value in event.headers)


def _content_length(event: h11.Response) -> int | None:
    for name, value in event.headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


class _LowWater:
    """SO_RCVLOWAT on the TCP socket under a TLS stream, set only when it changes."""

    def __init__(self, stream: TLSStream) -> None:
        self._socket = stream.transport_stream.socket
        self._value = 1

    def set(self, nbytes: int) -> None:
        value = max(1, min(BODY_LOWAT_BYTES, nbytes))
        if value != self._value:
            try:
                self._socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVLOWAT, value)
            except OSError:
                return  # a closed socket: the read that follows reports it
            self._value = value


SessionKey = tuple[str, int, uuid.UUID | None]


class TLSSessions:
    """TLS 1.3 sessions a client may resume, one per (host, port, expected peer UUID).

    A resumed handshake skips the certificates and their signatures: about half of a
    handshake's CPU (1.9 ms -> 0.95 ms with OpenSSL 3.0 here), and at a filecast's start
    every receiver dials every peer. The peer is still the one its certificate proved
    in the first handshake (the session carries that certificate, so ``getpeercert``,
    the UUID check and the revocation check see it). A session is resumed for at most
    ``max_age_s`` and never past that certificate's expiry; the server side refuses an
    expired certificate on a resumed session too (``HTTPSServer``).
    """

    def __init__(self, max_entries: int = 1024, max_age_s: float = 600.0) -> None:
        self.max_entries, self.max_age_s = max_entries, max_age_s
        self._entries: dict[SessionKey, tuple[ssl.SSLSession, float]] = {}
        self.resumed = 0  # handshakes that resumed a session

    def get(self, key: SessionKey) -> ssl.SSLSession | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        session, until = entry
        if trio.current_time() >= until:
            del self._entries[key]
            return None
        return session

    def put(self, key: SessionKey, session: ssl.SSLSession | None, peer: PeerIdentity) -> None:
        if session is None or not session.has_ticket:
            return
        left_s = (peer.not_after - dt.datetime.now(dt.UTC)).total_seconds()
        until = trio.current_time() + min(self.max_age_s, left_s)
        self._entries.pop(key, None)  # newest last: the oldest goes first when full
        self._entries[key] = (session, until)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]


class HTTPSConnection:
    """One keep-alive HTTP/1.1 connection to a peer. Use ``async with connect(...)``."""

    def __init__(
        self,
        stream: TLSStream,
        peer: PeerIdentity,
        remember: Callable[[ssl.SSLSession | None], None] | None = None,
    ) -> None:
        """``remember``: called with the TLS session when the connection closes."""
        self._stream = stream
        self._remember = remember
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._closing = False  # the last answer said "connection: close"
        self._between = True  # no request begun, or the last one's answer read whole
        self.peer = peer

    @property
    def reusable(self) -> bool:
        """Another request may follow: the last answer was read whole (no request was
        cut off by an error or a cancellation) and did not say "connection: close"."""
        return self._between and not self._closing

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        max_body: int = 16 << 20,
        timeout_s: float = 30.0,
        into: memoryview | None = None,
    ) -> ClientResponse:
        """One request and its answer. With ``into`` (a writable buffer), a 200 answer's
        Content-Length body that fits is read straight into it (``ClientResponse.view``): a bulk
        chunk then costs no allocation and no copy beyond decryption."""
        hdrs = [("host", "vigo"), ("content-length", str(len(body)))]
        hdrs += list((headers or {}).items())
        self._between = False
        try:
            with trio.fail_after(timeout_s):
                if self._closing:
                    raise ClientError("the peer closed this connection after its last answer")
                if self._conn.our_state is h11.DONE:
                    self._conn.start_next_cycle()
                await self._stream.send_all(
                    self._conn.send(h11.Request(method=method, target=path, headers=hdrs))
                )
                if body:
                    await self._stream.send_all(self._conn.send(h11.Data(data=body)))
                await self._stream.send_all(self._conn.send(h11.EndOfMessage()))
                event = await next_event(self._conn, self._stream)
                if not isinstance(event, h11.Response):
                    raise ClientError(f"connection closed before a response to {method} {path}")
                expected = _content_length(event)
                if expected is not None and expected > max_body:
                    raise ClientError(f"response to {path} is {expected} bytes, over {max_body}")
                view: memoryview | None = None
                if expected is None:
                    data = await self._read_framed_body(method, path, max_body)
                else:
                    if into is not None and event.status_code == 200 and expected <= len(into):
                        view = into[:expected]
                    data = await self._read_exact_body(expected, method, path, view)
                    if _says_close(event):
                        self._closing = True
        except trio.TooSlowError as exc:
            raise ClientError(f"{method} {path}: no answer within {timeout_s:g} s") from exc
        except (h11.ProtocolError, trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            raise ClientError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        resp_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        self._between = True
        return ClientResponse(event.status_code, resp_headers, data, view)

    async def _read_exact_body(
        self, length: int, method: str, path: str, view: memoryview | None = None
    ) -> bytes:
        """A Content-Length body, read straight off the TLS stream into ``view`` (then
        ``b""`` is returned), else into a buffer of its own returned as bytes.

        Bytes h11 already buffered are taken first; the rest never goes through h11 (a
        bulk chunk is 64+ TLS records: its per-event bookkeeping was a fifth of a
        receiver's CPU). Exactly ``length`` bytes are read, so the connection is then at
        a message boundary and the next request starts a fresh h11 state machine.
        """
        target = view if view is not None else memoryview(bytearray(length))
        size = 0
        while size < length:
            ev = self._conn.next_event()
            if isinstance(ev, h11.Data):
                target[size : size + len(ev.data)] = ev.data
                size += len(ev.data)
            elif ev is h11.NEED_DATA:
                break
            else:  # EndOfMessage before length bytes, or a protocol surprise
                raise ClientError(f"response to {method} {path} ended early")
        lowat = _LowWater(self._stream)
        try:
            while size < length:
                lowat.set(length - size - TLS_RECORD_SLACK)
                got = await self._stream.receive_into(target[size:])
                if not got:
                    raise ClientError(f"response to {method} {path} ended early")
                size += got
        finally:
            lowat.set(1)
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        return b"" if view is not None else bytes(target)

    async def _read_framed_body(self, method: str, path: str, max_body: int) -> bytes:
        """A chunked or close-delimited body, through h11."""
        parts: list[bytes] = []
        size = 0
        while True:
            ev = await next_event(self._conn, self._stream)
            if isinstance(ev, h11.Data):
                size += len(ev.data)
                if size > max_body:
                    raise ClientError(f"response to {path} over {max_body} bytes")
                parts.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise ClientError(f"response to {method} {path} ended early")

    async def aclose(self) -> None:
        if self._remember is not None:
            self._remember(self._stream.session)
            self._remember = None
        await trio.aclose_forcefully(self._stream)

    async def __aenter__(self) -> HTTPSConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def connect(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    expect_uuid: uuid.UUID | None = None,
    expect_server: bool = False,
    timeout_s: float = 10.0,
    local_address: str | None = None,
    sessions: TLSSessions | None = None,
) -> HTTPSConnection:
    """Dial, handshake and check the peer's identity before any request is sent.

    ``local_address`` pins the source address (a node bound to one address dials from it,
    so the far end sees the address it can dial back). ``sessions``: resume an earlier
    session with this peer when there is one, and keep this one when it closes.
    """
    key: SessionKey = (host, port, expect_uuid)
    session = sessions.get(key) if sessions is not None else None
    try:
        with trio.fail_after(timeout_s):
            tcp = await trio.open_tcp_stream(host, port, local_address=local_address)
            stream = TLSStream(
                tcp, ssl_context, server_side=False, server_hostname=host, session=session
            )
            try:
                await stream.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError as exc:
        raise ClientError(f"{host}:{port}: no TLS handshake within {timeout_s:g} s") from exc
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        raise ClientError(f"{host}:{port}: {exc or type(exc).__name__}") from exc
    try:
        peer = identity_from_peercert(stream.getpeercert())
        if expect_uuid is not None and peer.uuid != expect_uuid:
            raise PeerIdentityMismatch(f"{host}:{port} is {peer.uuid}, not {expect_uuid}")
        if expect_server and not peer.is_server:
            raise PeerIdentityMismatch(f"{host}:{port} is not the server lite")
        pki.check_not_expired(peer)  # a resumed session skips OpenSSL's own check
    except IdentityError as exc:
        await trio.aclose_forcefully(stream)
        raise ClientError(f"{host}:{port}: {exc}") from exc
    except PeerIdentityMismatch:
        await trio.aclose_forcefully(stream)
        raise
    if sessions is None:
        return HTTPSConnection(stream, peer)
    if stream.session_reused:
        sessions.resumed += 1
    return HTTPSConnection(stream, peer, lambda s: sessions.put(key, s, peer))


def retry_after_s(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Exponential backoff: base, 2·base, 4·base … capped (callers add jitter)."""
    return min(cap_s, base_s * math.pow(2, max(0, attempt)))
