"""What the HTTP/1.1 server and client share: sizes, and reading the next h11 event."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import h11
import trio

from ..tlsstream import TLSStream

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


async def next_event(conn: h11.Connection, stream: TLSStream) -> Any:
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
