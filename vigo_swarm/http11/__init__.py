"""HTTP/1.1 over TLS on trio, built on h11: the server and client under every Vigo channel.

Both the swarm peer channel (TCP 1531, mutual TLS) and the server lite API speak
through this package. We use h11 over TLS on trio (``tlsstream.TLSStream``, which
decrypts every buffered record per wake-up) rather than hypercorn because
a handler must see the *verified peer certificate* (hypercorn hides it) and because it
is as fast for bulk bodies (STACK.md). HTTP/2 is never offered: ALPN says http/1.1.

Modules: ``server`` (``Request``, ``Response``, ``Router``, ``HTTPSServer``), ``client``
(``connect``, ``HTTPSConnection``, ``TLSSessions``), ``_wire`` (the sizes both use).
Everything public is re-exported here: callers write ``http11.ClientError``.

Exceptions::

    HTTPError            -- raised by a handler: becomes a JSON error response
    ClientError          -- the client side could not complete a request
      ├── PeerIdentityMismatch -- TLS was fine but the certificate is not who we dialled
      └── (wraps OSError, trio.BrokenResourceError, ssl.SSLError, h11 errors)

Every handler receives a ``Request`` whose ``peer`` is the identity read from the
verified client certificate, or ``None`` when the client sent none (only possible on
a server whose context makes client certificates optional).
"""

from ._wire import (
    BODY_LOWAT_BYTES,
    JSON_TYPE,
    MAX_HEADER_BYTES,
    READ_BYTES,
    SEND_BUFFER_BYTES,
    TLS_RECORD_SLACK,
)
from .client import (
    ClientError,
    ClientResponse,
    HTTPSConnection,
    PeerIdentityMismatch,
    TLSSessions,
    connect,
    retry_after_s,
)
from .server import (
    HTTPError,
    HTTPSServer,
    Request,
    Response,
    Router,
    ServerLimits,
    ServerStats,
    json_response,
)

__all__ = [
    "BODY_LOWAT_BYTES",
    "JSON_TYPE",
    "MAX_HEADER_BYTES",
    "READ_BYTES",
    "SEND_BUFFER_BYTES",
    "TLS_RECORD_SLACK",
    "ClientError",
    "ClientResponse",
    "HTTPError",
    "HTTPSConnection",
    "HTTPSServer",
    "PeerIdentityMismatch",
    "Request",
    "Response",
    "Router",
    "ServerLimits",
    "ServerStats",
    "TLSSessions",
    "connect",
    "json_response",
    "retry_after_s",
]
