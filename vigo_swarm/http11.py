"""HTTP/1.1 over TLS on trio, built on h11: the server and client under every Vigo channel.

Both the swarm peer channel (TCP 1531, mutual TLS) and the server lite API speak
through this module. We use h11 over TLS on trio (``tlsstream.TLSStream``, which
decrypts every buffered record per wake-up) rather than hypercorn because
a handler must see the *verified peer certificate* (hypercorn hides it) and because it
is as fast for bulk bodies (STACK.md). HTTP/2 is never offered: ALPN says http/1.1.

Exceptions::

    HTTPError            -- raised by a handler: becomes a JSON error response
    ClientError          -- the client side could not complete a request
      ├── PeerIdentityMismatch -- TLS was fine but the certificate is not who we dialled
      └── (wraps OSError, trio.BrokenResourceError, ssl.SSLError, h11 errors)

Every handler receives a ``Request`` whose ``peer`` is the identity read from the
verified client certificate, or ``None`` when the client sent none (only possible on
a server whose context makes client certificates optional).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket as _socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from .pki import IdentityError, PeerIdentity, identity_from_peercert
from .tlsstream import TLSStream

log = logging.getLogger(__name__)

READ_BYTES = 65536  # STACK.md: receive_some(1 MiB) is slower; 64 KiB is the sweet spot
MAX_HEADER_BYTES = 16 * 1024
# Bulk bodies: wake the reader only once this much ciphertext is queued (SO_RCVLOWAT).
# On a slow link a wake-up per arriving packet costs a scheduler pass and a partial TLS
# record each; waiting for 48 KiB turns that into one read of about three records.
BODY_LOWAT_BYTES = 48 * 1024
# The tail of a body is read without a low-water mark: up to one TLS record of it may
# already sit undecrypted in the SSL object, so the socket may never hold more than
# ``remaining - TLS_RECORD_SLACK`` bytes.
TLS_RECORD_SLACK = 17 * 1024
# Responses are up to a chunk (1 MiB by default) each: a send buffer that holds one whole
# lets ``send_all`` hand it to the kernel in one go instead of one wake-up per few
# packets on a slow link (the kernel doubles the value; it caps at wmem_max).
SEND_BUFFER_BYTES = 2 << 20
JSON_TYPE = "application/json"


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    peer: PeerIdentity | None
    remote: str
    params: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON, or a 400 that says why not."""
        if not self.body:
            raise HTTPError(400, "empty_body", "request body must be a JSON object")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes | AsyncIterator[bytes] = b""
    content_type: str = JSON_TYPE
    content_length: int | None = None  # required when body is an iterator
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(obj, separators=(",", ":")).encode())


class HTTPError(Exception):
    """Raised by a handler to answer with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        return json_response({"error": {"code": self.code, "message": self.message}}, self.status)


Handler = Callable[[Request], Awaitable[Response]]
# Admission runs once per connection, right after the handshake. It returns None to
# admit, or a reason: every request on that connection is then answered 403 with it.
Admit = Callable[[PeerIdentity | None], str | None]
# A claim looks at a route's params and says whether its handler takes this request.
Claim = Callable[[Mapping[str, str]], bool]


# ------------------------------------------------------------------------------ routing


class Router:
    """Method + path-pattern routing; ``{name}`` segments become ``Request.params``.

    A route added with ``claim`` answers only the paths whose params it accepts, and is
    tried before every route without one — whatever the order they were added in — so
    a subsystem can take over a shared pattern for its own keys (lockbox serves its
    ciphertext blobs, to members only, on the blob routes filecast also serves).
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler, int]] = []
        self._claimed: list[tuple[str, re.Pattern[str], Handler, int, Claim]] = []

    def add(
        self,
        method: str,
        pattern: str,
        handler: Handler,
        *,
        max_body: int = 1 << 20,
        claim: Claim | None = None,
    ) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        if claim is None:
            self._routes.append((method.upper(), regex, handler, max_body))
        else:
            self._claimed.append((method.upper(), regex, handler, max_body, claim))

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str], int]:
        for m, rx, handler, max_body, claim in self._claimed:
            match = rx.match(path)
            if match is not None and m == method and claim(match.groupdict()):
                return handler, match.groupdict(), max_body
        allowed = False
        for m, rx, handler, max_body in self._routes:
            match = rx.match(path)
            if match is None:
                continue
            if m == method:
                return handler, match.groupdict(), max_body
            allowed = True
        if allowed:
            raise HTTPError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise HTTPError(404, "not_found", f"no such endpoint: {path}")


# ------------------------------------------------------------------------------- server


@dataclass(frozen=True, slots=True)
class ServerLimits:
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    max_connections: int = 512


@dataclass(slots=True)
class ServerStats:
    connections: int = 0
    handshake_failures: int = 0
    refused: int = 0
    requests: int = 0
    errors_5xx: int = 0


class HTTPSServer:
    """Serves a ``Router`` over TLS. Start with ``await nursery.start(server.run)``.

    ``task_status.started`` receives the bound port (useful with port 0 in tests).
    """

    def __init__(
        self,
        router: Router,
        ssl_context: ssl.SSLContext,
        *,
        host: str,
        port: int,
        admit: Admit | None = None,
        limits: ServerLimits | None = None,
        name: str = "https",
    ) -> None:
        self.router = router
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.admit = admit
        self.limits = limits or ServerLimits()
        self.name = name
        self.stats = ServerStats()
        self._slots = trio.CapacityLimiter(self.limits.max_connections)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host or None)
        for listener in listeners:  # accepted sockets inherit it
            listener.socket.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        port = listeners[0].socket.getsockname()[1]
        log.info("%s listening on %s:%d", self.name, self.host or "*", port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._on_tcp, listeners)
            task_status.started(port)

    async def _on_tcp(self, tcp: trio.SocketStream) -> None:
        try:
            remote = tcp.socket.getpeername()[0]
        except OSError:
            remote = "?"
        if self._slots.borrowed_tokens >= self._slots.total_tokens:
            self.stats.refused += 1
            await trio.aclose_forcefully(tcp)
            return
        async with self._slots:
            self.stats.connections += 1
            stream = TLSStream(tcp, self.ssl_context, server_side=True)
            try:
                with trio.fail_after(self.limits.handshake_timeout_s):
                    await stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
                self.stats.handshake_failures += 1
                log.debug("%s: handshake with %s failed: %s", self.name, remote, exc)
                await trio.aclose_forcefully(stream)
                return
            try:
                await self._serve_connection(stream, remote)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

    def _peer_of(self, stream: TLSStream) -> PeerIdentity | None:
        if not stream.getpeercert(binary_form=True):
            return None  # no certificate (allowed only where client certs are optional)
        return identity_from_peercert(stream.getpeercert())

    async def _serve_connection(self, stream: TLSStream, remote: str) -> None:
        bad_identity: str | None = None
        peer: PeerIdentity | None = None
        try:
            peer = self._peer_of(stream)
        except IdentityError as exc:
            bad_identity = f"certificate rejected: {exc}"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        while True:
            with trio.move_on_after(self.limits.idle_timeout_s) as idle:
                event = await _next_event(conn, stream)
            if idle.cancelled_caught or isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            self.stats.requests += 1
            # Admission is checked per request, not per connection, so a revocation
            # learned at check-in also ends keep-alive connections opened before it.
            refusal = bad_identity
            if refusal is None and self.admit is not None:
                refusal = self.admit(peer)
            if refusal is not None:
                self.stats.refused += 1
                who = peer.label if peer else "anonymous"
                log.info("%s: refused %s from %s: %s", self.name, who, remote, refusal)
            with trio.move_on_after(self.limits.request_timeout_s) as deadline:
                response = await self._respond(conn, stream, event, peer, remote, refusal)
                await _send_response(conn, stream, response)
            if deadline.cancelled_caught or refusal is not None:
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _respond(
        self,
        conn: h11.Connection,
        stream: TLSStream,
        event: h11.Request,
        peer: PeerIdentity | None,
        remote: str,
        refusal: str | None,
    ) -> Response:
        if refusal is not None:
            return HTTPError(403, "refused", refusal).response()
        method = event.method.decode("ascii", "replace").upper()
        target = urlsplit(event.target.decode("ascii", "replace"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        try:
            handler, params, max_body = self.router.route(method, target.path)
            body = await _read_body(conn, stream, max_body)
            request = Request(
                method=method,
                path=target.path,
                query=dict(parse_qsl(target.query)),
                headers=headers,
                body=body,
                peer=peer,
                remote=remote,
                params=params,
            )
            return await handler(request)
        except HTTPError as exc:
            return exc.response()
        except Exception:  # one bad request never takes the server down
            self.stats.errors_5xx += 1
            log.exception("%s: handler for %s %s failed", self.name, method, target.path)
            return HTTPError(500, "internal", "internal error (see the server log)").response()


async def _next_event(conn: h11.Connection, stream: TLSStream) -> Any:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return h11.ConnectionClosed()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(READ_BYTES)
            except (trio.BrokenResourceError, ssl.SSLError):
                data = b""
            conn.receive_data(data if isinstance(data, bytes) else bytes(data))
            continue
        return event


async def _read_body(conn: h11.Connection, stream: TLSStream, max_body: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_body:
                raise HTTPError(413, "too_large", f"request body over {max_body} bytes")
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise HTTPError(400, "bad_request", "request body ended early")


async def _send_data(conn: h11.Connection, stream: TLSStream, data: bytes) -> None:
    """One body piece, framed by h11 without copying it (``send`` would join it)."""
    for part in conn.send_with_data_passthrough(h11.Data(data=data)) or ():
        await stream.send_all(part)


async def _send_response(conn: h11.Connection, stream: TLSStream, response: Response) -> None:
    headers = [("content-type", response.content_type), *response.headers]
    if isinstance(response.body, bytes):
        headers.append(("content-length", str(len(response.body))))
    elif response.content_length is not None:
        headers.append(("content-length", str(response.content_length)))
    if conn.their_state is not h11.DONE:
        headers.append(("connection", "close"))  # we did not read their whole body
    try:
        await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
        if isinstance(response.body, bytes):
            if response.body:
                await _send_data(conn, stream, response.body)
        else:
            async for piece in response.body:
                await _send_data(conn, stream, piece)
        await stream.send_all(conn.send(h11.EndOfMessage()))
    except h11.LocalProtocolError as exc:
        log.warning("response framing error: %s", exc)
        raise trio.BrokenResourceError from exc


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


class HTTPSConnection:
    """One keep-alive HTTP/1.1 connection to a peer. Use ``async with connect(...)``."""

    def __init__(self, stream: TLSStream, peer: PeerIdentity) -> None:
        self._stream = stream
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._closing = False  # the last answer said "connection: close"
        self.peer = peer

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
                event = await _next_event(self._conn, self._stream)
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
            ev = await _next_event(self._conn, self._stream)
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
) -> HTTPSConnection:
    """Dial, handshake and check the peer's identity before any request is sent.

    ``local_address`` pins the source address (a node bound to one address dials from it,
    so the far end sees the address it can dial back).
    """
    try:
        with trio.fail_after(timeout_s):
            tcp = await trio.open_tcp_stream(host, port, local_address=local_address)
            stream = TLSStream(tcp, ssl_context, server_side=False, server_hostname=host)
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
    except IdentityError as exc:
        await trio.aclose_forcefully(stream)
        raise ClientError(f"{host}:{port}: {exc}") from exc
    except PeerIdentityMismatch:
        await trio.aclose_forcefully(stream)
        raise
    return HTTPSConnection(stream, peer)


def retry_after_s(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Exponential backoff: base, 2·base, 4·base … capped (callers add jitter)."""
    return min(cap_s, base_s * math.pow(2, max(0, attempt)))
