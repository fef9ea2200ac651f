"""Certificates and TLS contexts for the fleet: who a peer is, and how we talk to it.

The fleet CA (owned by the server lite) is the swarm's root of trust. An envoy's
certificate names its client UUID as a URI SAN ``urn:vigo:envoy:<uuid>``; that UUID,
read from a *verified* certificate, is the only identity any handler may trust.
The server lite's own certificate carries ``urn:vigo:server-lite`` and IP/DNS SANs
instead; the CA never puts IP SANs or that URI into an envoy certificate, so an
envoy cannot pose as the server.

This module is pure: no sockets, no trio. It builds ``ssl.SSLContext`` objects and
reads identities out of certificates. The daemon's hot path reads them from the dict
``ssl`` returns for a verified peer (``identity_from_peercert``), so ``cryptography``
— a large import — is loaded only by code that makes keys or parses PEM/DER.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .durable import write_all

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

ENVOY_URI_PREFIX = "urn:vigo:envoy:"
SERVER_URI = "urn:vigo:server-lite"
ALPN_HTTP11 = "http/1.1"


class IdentityError(ValueError):
    """A certificate does not carry a usable Vigo identity."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who is on the other end of a verified TLS connection."""

    uuid: uuid.UUID | None  # None for the server lite's certificate
    serial: int
    hostname: str | None
    is_server: bool
    not_after: dt.datetime

    @property
    def label(self) -> str:
        if self.is_server:
            return "server-lite"
        return f"{self.hostname or '?'}({self.uuid})"


def identity_from_der(der: bytes) -> PeerIdentity:
    """Read the Vigo identity from a DER certificate that TLS has already verified."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise IdentityError(f"unparseable certificate: {exc}") from exc
    return identity_from_cert(cert)


def identity_from_cert(cert: x509.Certificate) -> PeerIdentity:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise IdentityError("certificate has no subjectAltName") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    dns = san.get_values_for_type(x509.DNSName)
    return _identity(uris, dns, cert.serial_number, cert.not_valid_after_utc)


def identity_from_peercert(cert: dict[str, Any]) -> PeerIdentity:
    """The identity from ``SSLObject.getpeercert()`` — the dict form, which ssl only
    fills for a certificate it has verified."""
    if not cert:
        raise IdentityError("no verified peer certificate")
    sans = cert.get("subjectAltName", ())
    uris = [v for k, v in sans if k == "URI"]
    dns = [v for k, v in sans if k == "DNS"]
    try:
        serial = int(cert["serialNumber"], 16)
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC)
    except (KeyError, ValueError) as exc:
        raise IdentityError(f"certificate lacks a serial or expiry: {exc}") from exc
    return _identity(uris, dns, serial, not_after)


def check_not_expired(peer: PeerIdentity, now: dt.datetime | None = None) -> None:
    """IdentityError if the peer's certificate has expired. OpenSSL checks this in a full
    handshake; a resumed session (http11.TLSSessions) skips that check, so both ends of
    the peer channel make it themselves."""
    now = now or dt.datetime.now(dt.UTC)
    if peer.not_after <= now:
        raise IdentityError(f"certificate expired at {peer.not_after:%Y-%m-%d %H:%M:%S} UTC")


def _identity(uris: list[str], dns: list[str], serial: int, not_after: dt.datetime) -> PeerIdentity:
    envoy_uris = [u for u in uris if u.startswith(ENVOY_URI_PREFIX)]
    is_server = SERVER_URI in uris
    if is_server and envoy_uris:
        raise IdentityError("certificate claims to be both server and envoy")
    ident: uuid.UUID | None = None
    if envoy_uris:
        if len(envoy_uris) != 1:
            raise IdentityError("certificate names more than one envoy UUID")
        try:
            ident = uuid.UUID(envoy_uris[0][len(ENVOY_URI_PREFIX) :])
        except ValueError as exc:
            raise IdentityError(f"malformed envoy UUID in {envoy_uris[0]!r}") from exc
    elif not is_server:
        raise IdentityError("certificate carries no Vigo identity URI")
    return PeerIdentity(
        uuid=ident,
        serial=serial,
        hostname=dns[0] if dns else None,
        is_server=is_server,
        not_after=not_after,
    )


def cert_fingerprint(cert_pem_or_der: bytes) -> str:
    """SHA-256 over the DER encoding, lowercase hex (what a join token pins)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert_pem_or_der).public_bytes(
            serialization.Encoding.DER
        )
    else:
        der = cert_pem_or_der
    return hashlib.sha256(der).hexdigest()


def generate_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: ec.EllipticCurvePrivateKey, hostname: str) -> bytes:
    """A CSR naming the hostname; the CA ignores every extension in it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomic write of a non-secret file (certificates, state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            write_all(fd, memoryview(data), None)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not also collect temp files
        raise


def _base_context(purpose: ssl.Purpose, cafile: Path | None, cadata: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose, cafile=cafile, cadata=cadata)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN_HTTP11])
    return ctx


def server_context(
    cert_file: Path, key_file: Path, ca_file: Path, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """TLS 1.3 server context; client certificates verified against the fleet CA.

    ``require_client_cert=False`` asks for a certificate but lets clients without one
    in (the server lite: admins use a bearer token, envoys present their certificate).
    """
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH, ca_file, None)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: Path | None = None,
    *,
    cadata: str | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    check_hostname: bool = False,
) -> ssl.SSLContext:
    """TLS 1.3 client context pinned to the fleet CA.

    Peers are dialled by address and identified by the UUID in their certificate, so
    hostname checking is off by default; callers compare ``identity_from_der`` with the
    UUID they expected.
    """
    ctx = _base_context(ssl.Purpose.SERVER_AUTH, ca_file, cadata)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
