"""The fleet CA: the swarm's root of trust, created by the server lite on first start.

Layout under ``<data>/ca/``::

    ca.pem          the CA certificate (public; its SHA-256 is pinned by join tokens)
    ca.key          the CA private key, mode 0600, never logged, never served
    authority.key   Ed25519 seed signing operator-authorized records (0600)
    authority.pub   its public key (hex), handed to envoys at enrollment

Issuance rules (why an envoy cannot pose as anything else):
- an envoy certificate's identity comes only from the CA: a URI SAN
  ``urn:vigo:envoy:<uuid>`` the server chose, and one DNS SAN for the hostname;
  every extension in the CSR is ignored;
- envoy certificates never carry IP SANs or ``urn:vigo:server-lite``, which only the
  server's own certificate has.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigo_swarm.pki import (
    ENVOY_URI_PREFIX,
    SERVER_URI,
    cert_fingerprint,
    generate_key,
    key_to_pem,
    write_public_file,
    write_secret_file,
)

CA_VALIDITY = dt.timedelta(days=3650)
ENVOY_VALIDITY = dt.timedelta(days=365)
SERVER_VALIDITY = dt.timedelta(days=825)


class CAError(Exception):
    """The CA cannot do what was asked (bad CSR, unreadable files)."""


@dataclass(frozen=True, slots=True)
class IssuedCert:
    pem: bytes
    serial: int
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FleetCA:
    def __init__(
        self,
        directory: Path,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        authority: nacl.signing.SigningKey,
    ) -> None:
        self.directory = directory
        self.cert = cert
        self._key = key
        self._authority = authority

    # -------------------------------------------------------------------- lifecycle

    @classmethod
    def load_or_create(cls, directory: Path, *, common_name: str = "Vigo fleet CA") -> FleetCA:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        auth_path = directory / "authority.key"
        if not key_path.exists():
            key = generate_key()
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            now = _now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + CA_VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            write_secret_file(key_path, key_to_pem(key))
            write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        if not auth_path.exists():
            seed = nacl.signing.SigningKey.generate().encode()
            write_secret_file(auth_path, seed)
            pub = nacl.signing.SigningKey(seed).verify_key.encode().hex()
            write_public_file(directory / "authority.pub", (pub + "\n").encode())
        try:
            loaded_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            authority = nacl.signing.SigningKey(auth_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CAError(f"cannot load the fleet CA from {directory}: {exc}") from exc
        if not isinstance(loaded_key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{key_path}: not an EC private key")
        if key_path.stat().st_mode & 0o077:
            key_path.chmod(0o600)
        return cls(directory, cert, loaded_key, authority)

    # ---------------------------------------------------------------------- queries

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert_pem)

    @property
    def authority_public_hex(self) -> str:
        return self._authority.verify_key.encode().hex()

    def sign_record(self, payload: bytes) -> bytes:
        """Ed25519 signature by the operator authority (filecast records, revocations)."""
        return self._authority.sign(payload).signature

    # ---------------------------------------------------------------------- issuing

    def _builder(
        self,
        subject_cn: str,
        public_key: ec.EllipticCurvePublicKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.CertificateBuilder:
        serial = int.from_bytes(secrets.token_bytes(16), "big") >> 1
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )

    def issue_envoy(
        self,
        csr_pem: bytes,
        envoy_uuid: uuid.UUID,
        hostname: str,
        *,
        not_before: dt.datetime | None = None,
        validity: dt.timedelta = ENVOY_VALIDITY,
    ) -> IssuedCert:
        """Sign an envoy certificate: UUID and hostname from us, only the key from the CSR."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CAError(f"the CSR is not valid PEM: {exc}") from exc
        if not csr.is_signature_valid:
            raise CAError("the CSR's self-signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in (
            "secp256r1",
            "secp384r1",
        ):
            raise CAError("the CSR key must be EC P-256 or P-384")
        start = not_before or (_now() - dt.timedelta(minutes=5))
        cert = (
            self._builder(str(envoy_uuid), public_key, start, start + validity)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(f"{ENVOY_URI_PREFIX}{envoy_uuid}"),
                        x509.DNSName(hostname),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCert(
            cert.public_bytes(serialization.Encoding.PEM),
            cert.serial_number,
            cert.not_valid_after_utc,
        )

    def issue_server(self, names: list[str], key: ec.EllipticCurvePrivateKey) -> IssuedCert:
        """The server lite's own certificate: IP and DNS SANs plus the server URI."""
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(SERVER_URI)]
        for name in dict.fromkeys(names):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        start = _now() - dt.timedelta(minutes=5)
        cert = (
            self._builder("vigo server lite", key.public_key(), start, start + SERVER_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCert(
            cert.public_bytes(serialization.Encoding.PEM),
            cert.serial_number,
            cert.not_valid_after_utc,
        )
