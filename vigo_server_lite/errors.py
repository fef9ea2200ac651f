"""The server lite's exceptions. Pure modules raise them; the API edge maps them.

::

    ServerLiteError        -- base of everything the server lite raises on purpose
      ├── ConfigError      -- server.yaml or a flag is wrong (names the key and the file)
      ├── SetupError       -- the data dir cannot be prepared (wraps OSError,
      │                       sqlite3.Error and ca.CAError)
      └── Refusal          -- a request is refused: HTTP status + stable error code +
                              a message for people; ``api`` turns it into
                              ``{"error": {"code", "message"}}``

Refusal codes (``Refusal.code``) are part of the API, see docs/server-lite.md.
"""

from __future__ import annotations


class ServerLiteError(Exception):
    """Base of the server lite's own exceptions."""


class ConfigError(ServerLiteError):
    """Configuration is invalid; the message names the key and where it came from."""


class SetupError(ServerLiteError):
    """The data dir (CA, TLS certificate, admin token, database) cannot be prepared."""


class Refusal(ServerLiteError):
    """A client request is refused with a stable code and a clear message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"Refusal({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "bad_request") -> Refusal:
    return Refusal(400, code, message)
