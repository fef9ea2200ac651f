"""Enrollment: trade a join token for an envoy identity, trusting nothing the token does not pin.

The order is the security argument (kubeadm's discovery hash, done strictly):

1. parse the token ``vigo1.<id>.<secret>.<ca-sha256>``;
2. fetch ``GET /api/v1/ca`` *without* trusting the connection, and compare the SHA-256
   of that certificate's DER with the token's fingerprint. A mismatch ends here, before
   a key is made or a byte of the token is sent;
3. generate the EC key locally and write it 0600 (it never leaves this host);
4. dial again, this time verifying the server certificate against that CA *and* the
   host name in the URL, and checking it carries ``urn:vigo:server-lite`` (an envoy
   certificate from the same CA cannot pose as the server); only then POST the token,
   the CSR and the hostname;
5. check the answer (the certificate holds our public key, chains to the pinned CA,
   names the UUID the server reported) and write ``identity/`` atomically:
   ``ca.pem``, ``key.pem``, ``cert.pem`` and, last, ``envoy.json`` -- its presence
   means "enrolled".

Exceptions::

    EnrollError              -- base; ``.code`` is a short stable string, ``.message`` for people
      ├── TrustError         -- code "trust": the server is not the one the token pins
      │                         (CA fingerprint mismatch, certificate name/identity wrong)
      ├── ServerUnreachable  -- code "unreachable": connect, TLS or timeout failure, or an
      │                         answer that is not what a server lite sends
      └── Refused            -- the server said no; ``.code`` is its error code
                                (token_expired, token_exhausted, bad_hostname, ...),
                                ``.status`` the HTTP status
    Other codes on EnrollError itself: "token_malformed", "already_enrolled", "bad_url",
    "bad_response", "state_dir".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vigo_swarm import http11, pki

from .paths import StatePaths

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"vigo1\.([0-9a-f]{8})\.([A-Za-z0-9_-]{22,128})\.([0-9a-f]{64})")
MAX_CA_BYTES = 64 * 1024


class EnrollError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TrustError(EnrollError):
    def __init__(self, message: str) -> None:
        super().__init__("trust", message)


class ServerUnreachable(EnrollError):
    def __init__(self, message: str) -> None:
        super().__init__("unreachable", message)


class Refused(EnrollError):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


@dataclass(frozen=True, slots=True)
class EnrollResult:
    uuid: uuid.UUID
    hostname: str
    server_url: str
    checkin_interval_s: int
    authority_public_key: str
    certificate_serial: int
    paths: StatePaths


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    id: str
    ca_fingerprint: str


def _parse_token(text: str) -> _Token:
    text = text.strip()
    match = _TOKEN_RE.fullmatch(text)
    if match is None:
        raise EnrollError(
            "token_malformed",
            "the join token is malformed: expected vigo1.<8 hex id>.<secret>.<64 hex CA "
            "fingerprint>, as printed by `vigocli token create`",
        )
    return _Token(text, match.group(1), match.group(3))


def _split_url(server_url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(server_url.strip())
        port = parts.port or 443
    except ValueError as exc:
        raise EnrollError("bad_url", f"server URL {server_url!r} is not valid: {exc}") from exc
    if parts.scheme != "https" or not parts.hostname:
        raise EnrollError(
            "bad_url", f"server URL must look like https://HOST[:PORT], not {server_url!r}"
        )
    host = parts.hostname
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"https://{netloc}", host, port


async def _fetch_ca_unverified(base: str, timeout_s: float) -> bytes:
    """The CA certificate, over a connection we do not trust: the token's hash judges it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system trust store: nothing to trust
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # deliberate: verified below by the pinned fingerprint
    try:
        async with httpx.AsyncClient(verify=ctx, timeout=timeout_s, trust_env=False) as client:
            resp = await client.get(f"{base}/api/v1/ca")
    except httpx.HTTPError as exc:
        raise ServerUnreachable(f"cannot reach {base}: {exc or type(exc).__name__}") from exc
    if resp.status_code != 200 or len(resp.content) > MAX_CA_BYTES:
        raise ServerUnreachable(
            f"{base} did not answer GET /api/v1/ca like a server lite (HTTP {resp.status_code})"
        )
    return resp.content


def _check_ca(ca_pem: bytes, token: _Token, base: str) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        certs = []
    if len(certs) != 1:
        raise TrustError(f"{base} did not hand out exactly one CA certificate")
    der = certs[0].public_bytes(serialization.Encoding.DER)
    actual = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(actual, token.ca_fingerprint):
        raise TrustError(
            f"the server at {base} is not the one this join token was made for: its CA "
            f"fingerprint is {actual}, the token pins {token.ca_fingerprint}. "
            "Nothing was sent. Check the --server URL."
        )
    return certs[0]


async def _post_enroll(
    host: str, port: int, ca_pem: bytes, body: bytes, base: str, timeout_s: float
) -> tuple[int, Any]:
    ctx = pki.client_context(cadata=ca_pem.decode("ascii"), check_hostname=True)
    try:
        conn = await http11.connect(host, port, ctx, expect_server=True, timeout_s=timeout_s)
    except http11.PeerIdentityMismatch as exc:
        raise TrustError(f"{base} presented a certificate that is not the server's: {exc}") from exc
    except http11.ClientError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            raise TrustError(
                f"{base}: the server certificate does not verify against the pinned CA "
                f"for this name: {exc.__cause__.verify_message}"
            ) from exc
        raise ServerUnreachable(f"cannot reach {base}: {exc}") from exc
    async with conn:
        try:
            resp = await conn.request(
                "POST",
                "/api/v1/enroll",
                body=body,
                headers={"content-type": "application/json"},
                timeout_s=timeout_s,
            )
        except http11.ClientError as exc:
            raise ServerUnreachable(f"{base}: enrollment request failed: {exc}") from exc
    try:
        return resp.status, resp.json()
    except http11.ClientError as exc:
        raise ServerUnreachable(f"{base}: HTTP {resp.status} with a non-JSON body") from exc


def _refusal(status: int, answer: Any, base: str) -> Refused:
    err = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return Refused(err["code"], str(err.get("message", "")), status)
    return Refused("refused", f"{base} refused the enrollment (HTTP {status})", status)


def _check_answer(
    answer: Any, key_public: bytes, ca: x509.Certificate
) -> tuple[uuid.UUID, x509.Certificate, str, int]:
    def bad(why: str) -> EnrollError:
        return EnrollError("bad_response", f"the server's enrollment answer is unusable: {why}")

    if not isinstance(answer, dict):
        raise bad("not a JSON object")
    try:
        envoy_uuid = uuid.UUID(str(answer["uuid"]))
        cert = x509.load_pem_x509_certificate(str(answer["certificate"]).encode("ascii"))
        authority = str(answer["authority_public_key"])
        interval = answer["checkin_interval_s"]
    except (KeyError, ValueError, UnicodeEncodeError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise bad("checkin_interval_s is not a positive integer")
    if not re.fullmatch(r"[0-9a-f]{64}", authority):
        raise bad("authority_public_key is not 32 bytes of hex")
    if (
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        != key_public
    ):
        raise bad("the certificate does not hold our public key")
    try:
        cert.verify_directly_issued_by(ca)
        ident = pki.identity_from_cert(cert)
    except (ValueError, TypeError, pki.IdentityError) as exc:
        raise bad(f"the certificate does not chain to the pinned CA: {exc}") from exc
    if ident.uuid != envoy_uuid or ident.is_server:
        raise bad("the certificate does not name the UUID the server reported")
    return envoy_uuid, cert, authority, interval


async def enroll(
    server_url: str,
    token: str,
    state_dir: Path,
    *,
    hostname: str | None = None,
    force: bool = False,
    timeout_s: float = 30.0,
) -> EnrollResult:
    """Enroll this host with the server lite at ``server_url``; see the module docstring."""
    parsed = _parse_token(token)
    base, host, port = _split_url(server_url)
    paths = StatePaths(state_dir)
    if paths.envoy_json.exists() and not force:
        raise EnrollError(
            "already_enrolled",
            f"{state_dir} already holds an enrolled identity ({paths.envoy_json}); "
            "pass --force to enroll again (the server then revokes the old certificate)",
        )
    name = (hostname or socket.gethostname()).strip().lower()

    ca_pem = await _fetch_ca_unverified(base, timeout_s)
    ca = _check_ca(ca_pem, parsed, base)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)

    key = pki.generate_key()
    pending = paths.identity_dir / ".key.pem.pending"
    try:
        pki.write_secret_file(pending, pki.key_to_pem(key))
        os.chmod(paths.identity_dir, 0o700)
    except OSError as exc:
        raise EnrollError("state_dir", f"cannot write to {paths.identity_dir}: {exc}") from exc
    # The CA takes only the key from the CSR; the subject is a courtesy (CN <= 64 chars).
    csr = pki.make_csr(key, name[:64] or "envoy").decode("ascii")
    body = json.dumps({"token": parsed.text, "csr": csr, "hostname": name}).encode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        status, answer = await _post_enroll(host, port, ca_pem, body, base, timeout_s)
        if not 200 <= status < 300:
            raise _refusal(status, answer, base)
        envoy_uuid, cert, authority, interval = _check_answer(answer, public, ca)
    except BaseException:
        pending.unlink(missing_ok=True)  # no identity came of it: the key is useless
        raise

    record = {
        "uuid": str(envoy_uuid),
        "hostname": str(answer.get("hostname", name)),
        "server_url": base,
        "authority_public_key": authority,
        "checkin_interval_s": interval,
        "enrolled_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "certificate_serial": format(cert.serial_number, "x"),
    }
    try:
        paths.envoy_json.unlink(missing_ok=True)  # "enrolled" only once all files are in
        pki.write_public_file(paths.ca, ca_pem)
        os.replace(pending, paths.key)
        pki.write_public_file(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        pki.write_public_file(paths.envoy_json, (json.dumps(record, indent=2) + "\n").encode())
    except OSError as exc:
        raise EnrollError(
            "state_dir", f"cannot write the identity to {paths.identity_dir}: {exc}"
        ) from exc
    log.info("enrolled as %s (%s) with %s", envoy_uuid, record["hostname"], base)
    return EnrollResult(
        uuid=envoy_uuid,
        hostname=str(record["hostname"]),
        server_url=base,
        checkin_interval_s=interval,
        authority_public_key=authority,
        certificate_serial=cert.serial_number,
        paths=paths,
    )
