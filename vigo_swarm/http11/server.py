"""The HTTP/1.1 server: requests, responses, the router and ``HTTPSServer``."""

from __future__ import annotations

import json
import logging
import re
import socket as _socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from ..pki import IdentityError, PeerIdentity, check_not_expired, identity_from_peercert
from ..tlsstream import TLSStream
from ._wire import JSON_TYPE, MAX_HEADER_BYTES, SEND_BUFFER_BYTES, next_event

log = logging.getLogger(__name__)


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
        peer = identity_from_peercert(stream.getpeercert())
        check_not_expired(peer)  # a resumed session skips OpenSSL's own expiry check
        return peer

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
                event = await next_event(conn, stream)
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


async def _read_body(conn: h11.Connection, stream: TLSStream, max_body: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        event = await next_event(conn, stream)
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
