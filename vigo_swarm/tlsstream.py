"""TLS over a trio socket for the peer channel, decrypting many records per wake-up.

``trio.SSLStream`` returns one TLS record (≤ 16 KiB) per ``receive_some`` and passes
through the scheduler for each: on bulk chunk transfer that per-record pass is most of
the receiver's CPU (STACK.md). ``TLSStream`` does what it does — an ``ssl.SSLObject``
over two memory BIOs, the socket read and written by trio — but ``receive_some`` hands
back every record already received and decryptable (up to ``max_bytes``) in one call,
so the scheduler runs once per socket read (≈ 64 KiB) instead of once per record.

It covers what the peer channel needs, one task at a time per direction: handshake,
``receive_some``, ``receive_into`` (plaintext straight into a caller's buffer: a bulk
body then costs no allocation per record), ``send_all``, ``getpeercert``, ``aclose``.
Errors are the ``ssl`` module's (``SSLError`` and subclasses; a ragged EOF is
``SSLEOFError``) and trio's transport errors (``BrokenResourceError``,
``ClosedResourceError``); a clean ``close_notify`` reads as ``b""``. Messages OpenSSL
produces on its own after the handshake (session tickets, key updates) are sent as
soon as they appear.
"""

from __future__ import annotations

import contextlib
import errno
import ssl
from collections.abc import Callable
from typing import Any, cast

import trio

TRANSPORT_READ_BYTES = 65536  # ciphertext per socket read, into a buffer kept per stream
BULK_READ_BYTES = 256 * 1024  # the same while a body streams in (receive_into)
RECORD_BYTES = 16384  # the largest TLS plaintext record: read() never allocates more
SEND_PIECE_BYTES = 256 * 1024  # plaintext encrypted and sent per step (stays in cache)
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)  # the socket is done


class TLSStream(trio.abc.AsyncResource):
    def __init__(
        self,
        transport_stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        """``session``: a client's earlier session with this server, to resume."""
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        self._peer_closed = False
        self._rbuf = bytearray(TRANSPORT_READ_BYTES)  # grown on the first bulk read

    async def _flush(self) -> None:
        if self._outgoing.pending:
            await self.transport_stream.send_all(self._outgoing.read())

    async def _fill(self, bulk: bool = False) -> None:
        """Read ciphertext into a buffer kept for the stream's life (no bytes object per
        read), and hand it to the TLS object. ``bulk``: a body is streaming in, read up
        to BULK_READ_BYTES at once (a quarter of the scheduler passes per chunk); the
        bigger buffer is kept only by streams that carry bulk bodies."""
        if bulk and len(self._rbuf) < BULK_READ_BYTES:
            self._rbuf = bytearray(BULK_READ_BYTES)
        try:
            n = await self.transport_stream.socket.recv_into(self._rbuf)
        except OSError as exc:  # what trio's SocketStream.receive_some raises for these
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if n:
            self._incoming.write(memoryview(self._rbuf)[:n])
        else:
            self._incoming.write_eof()

    async def do_handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            except ssl.SSLError:
                # tell the peer why (an alert) before the caller closes the socket
                with trio.move_on_after(1), contextlib.suppress(*_GONE):
                    await self._flush()
                raise
            await self._flush()
            return

    async def receive_into(self, view: memoryview) -> int:
        """Plaintext straight into ``view`` (no bytes object per record): at least one
        byte, at most ``len(view)``; 0 once the peer closed with close_notify."""

        def take(at: int, room: int) -> int:
            # with a buffer, read() returns a count (typeshed says bytes)
            return cast(int, self._tls.read(room, view[at:]))

        return await self._receive(take, len(view), bulk=True)

    async def receive_some(self, max_bytes: int = TRANSPORT_READ_BYTES) -> bytes:
        """Plaintext: at least one byte, at most ``max_bytes``; ``b""`` once the peer
        closed with close_notify."""
        parts: list[bytes] = []

        def take(at: int, room: int) -> int:
            parts.append(self._tls.read(room))
            return len(parts[-1])

        await self._receive(take, max_bytes, bulk=False)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _receive(self, take: Callable[[int, int], int], limit: int, *, bulk: bool) -> int:
        """The decrypt loop of both readers: ``take(at, room)`` decrypts at most ``room``
        bytes (one record) into place ``at`` and says how many (0: close_notify, which
        CPython answers without an exception). Every record already decryptable is taken
        before waiting for the socket; returns the count, 0 once the peer closed."""
        size = 0
        while True:
            try:
                while size < limit:
                    n = take(size, min(RECORD_BYTES, limit - size))
                    if not n:
                        self._peer_closed = True
                        break
                    size += n
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                self._peer_closed = True
            if self._outgoing.pending:  # tickets, key updates, alerts
                await self._flush()
            if size or self._peer_closed:
                return size
            await self._fill(bulk=bulk)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``, a piece at a time (a 4 MiB chunk encrypted whole
        went through memory twice more, and nothing was sent until all of it was)."""
        view = memoryview(data)
        for at in range(0, len(view), SEND_PIECE_BYTES):
            self._tls.write(view[at : at + SEND_PIECE_BYTES])
            await self._flush()
        if not view:
            await self._flush()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tls.getpeercert(binary_form)

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, with the tickets the server sent so far (a client's)."""
        return self._tls.session

    @property
    def session_reused(self) -> bool:
        return self._tls.session_reused

    async def aclose(self) -> None:
        """Send close_notify (best effort, briefly), then close the socket."""
        try:
            with contextlib.suppress(ssl.SSLError):  # WantRead: the peer's reply we skip
                self._tls.unwrap()
            with trio.move_on_after(0.5), contextlib.suppress(*_GONE):
                await self._flush()
        finally:
            await self.transport_stream.aclose()
