"""Join tokens: their string format, their secrets and their states. Pure: no IO, no clock.

A join token reads ``vigo1.<id>.<secret>.<ca_sha256_hex>``:

- ``id``: 8 lowercase hex characters, the public handle (listed, revoked by it);
- ``secret``: at least 128 bits, URL-safe base64 without padding (``[A-Za-z0-9_-]``);
  the server keeps only its SHA-256 (the secret is random, so a fast hash is enough);
- ``ca_sha256_hex``: the SHA-256 of the fleet CA certificate's DER (64 lowercase hex),
  which the envoy compares with the CA the server hands out *before* it sends anything,
  as kubeadm's discovery hash does.

A token's state is derived, never stored: ``revoked`` beats ``expired`` beats
``exhausted`` beats ``active``. Using a token is a conditional increment in the
database (see ``db.Store.enroll``), so two enrollments can never both take the last use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from .errors import Refusal

TOKEN_PREFIX = "vigo1"  # noqa: S105 -- a format tag, not a secret
SECRET_BYTES = 24  # 192 bits; the format accepts >= 128 bits
MIN_SECRET_CHARS = 22  # ceil(128 / 6)
MAX_SECRET_CHARS = 128
MAX_TOKEN_CHARS = 256

_ID_RE = re.compile(r"[0-9a-f]{8}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]+")
_FP_RE = re.compile(r"[0-9a-f]{64}")

TokenState = Literal["active", "expired", "exhausted", "revoked"]


@dataclass(frozen=True, slots=True)
class JoinToken:
    """A parsed join token. ``str()`` gives the wire form; ``repr`` hides the secret."""

    id: str
    secret: str
    ca_fingerprint: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}.{self.id}.{self.secret}.{self.ca_fingerprint}"

    def __repr__(self) -> str:
        return f"JoinToken(id={self.id!r}, secret=<hidden>, ca_fingerprint={self.ca_fingerprint!r})"


def new_token(ca_fingerprint: str) -> JoinToken:
    return JoinToken(secrets.token_hex(4), secrets.token_urlsafe(SECRET_BYTES), ca_fingerprint)


def parse_token(text: object) -> JoinToken:
    """Parse the wire form, or raise ``Refusal(400, "token_malformed")`` saying what is wrong.

    Surrounding whitespace (a pasted newline) is forgiven; nothing else is.
    """

    def malformed(why: str) -> Refusal:
        return Refusal(400, "token_malformed", f"the join token is malformed: {why}")

    if not isinstance(text, str):
        raise malformed("it must be a string")
    text = text.strip()
    if not text:
        raise malformed("it is empty")
    if len(text) > MAX_TOKEN_CHARS:
        raise malformed(f"it is longer than {MAX_TOKEN_CHARS} characters")
    parts = text.split(".")
    if parts[0] != TOKEN_PREFIX:
        raise malformed(f"it must start with {TOKEN_PREFIX!r}. (vigo1.<id>.<secret>.<ca-sha256>)")
    if len(parts) != 4:
        raise malformed(f"expected 4 dot-separated parts, found {len(parts)}")
    _, token_id, secret, fingerprint = parts
    if not _ID_RE.fullmatch(token_id):
        raise malformed("the id must be 8 lowercase hex characters")
    if not _SECRET_RE.fullmatch(secret):
        raise malformed("the secret may hold only letters, digits, '-' and '_'")
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise malformed(f"the secret must be {MIN_SECRET_CHARS}..{MAX_SECRET_CHARS} characters")
    if not _FP_RE.fullmatch(fingerprint):
        raise malformed("the CA fingerprint must be 64 lowercase hex characters (SHA-256)")
    return JoinToken(token_id, secret, fingerprint)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the database holds about a token (never the secret itself)."""

    id: str
    secret_sha256: str
    description: str
    created_at: float
    expires_at: float
    max_uses: int
    uses: int
    revoked_at: float | None

    def state(self, now: float) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        if self.uses >= self.max_uses:
            return "exhausted"
        return "active"

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "max_uses": self.max_uses,
            "uses": self.uses,
            "revoked_at": self.revoked_at,
            "state": self.state(now),
        }


def check_usable(
    record: TokenRecord | None, token: JoinToken, ca_fingerprint: str, now: float
) -> TokenRecord:
    """Refuse a token that cannot enroll now, with the code saying why.

    An unknown id and a wrong secret get the same answer (``token_unknown``), so the
    refusal does not tell a guesser which ids exist.
    """
    if not hmac.compare_digest(token.ca_fingerprint, ca_fingerprint):
        raise Refusal(
            403,
            "token_unknown",
            "this join token pins another fleet CA: it was not issued by this server",
        )
    if record is None or not hmac.compare_digest(record.secret_sha256, hash_secret(token.secret)):
        raise Refusal(403, "token_unknown", f"join token {token.id} is not known to this server")
    state = record.state(now)
    if state == "revoked":
        raise Refusal(403, "token_revoked", f"join token {token.id} was revoked by an admin")
    if state == "expired":
        raise Refusal(403, "token_expired", f"join token {token.id} has expired")
    if state == "exhausted":
        raise Refusal(
            403,
            "token_exhausted",
            f"join token {token.id} has been used {record.uses} of {record.max_uses} times",
        )
    return record
