"""Identities read from certificates: the ssl dict path (daemon) and the DER path agree,
and certificates without exactly one well-formed Vigo identity are refused."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from vigo_server_lite.ca import FleetCA
from vigo_swarm import pki


def decode(pem: bytes, tmp_path: Path) -> dict:
    f = tmp_path / "c.pem"
    f.write_bytes(pem)
    return ssl._ssl._test_decode_cert(str(f))  # type: ignore[attr-defined]  # getpeercert's decoder


def test_dict_and_der_paths_agree(tmp_path: Path) -> None:
    ca = FleetCA.load_or_create(tmp_path / "ca")
    ident = uuid.uuid4()
    issued = ca.issue_envoy(pki.make_csr(pki.generate_key(), "h1"), ident, "h1")
    der = x509.load_pem_x509_certificate(issued.pem).public_bytes(serialization.Encoding.DER)
    a = pki.identity_from_der(der)
    b = pki.identity_from_peercert(decode(issued.pem, tmp_path))
    assert a == b
    assert a.uuid == ident and a.hostname == "h1" and a.serial == issued.serial
    assert not a.is_server


def rogue_cert(sans: list[x509.GeneralName]) -> bytes:
    key = pki.generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


U = x509.UniformResourceIdentifier


@pytest.mark.parametrize(
    ("sans", "message"),
    [
        ([], "no Vigo identity|no subjectAltName"),
        ([x509.DNSName("h")], "no Vigo identity"),
        (
            [U(f"urn:vigo:envoy:{uuid.uuid4()}"), U(f"urn:vigo:envoy:{uuid.uuid4()}")],
            "more than one",
        ),
        ([U("urn:vigo:envoy:not-a-uuid")], "malformed envoy UUID"),
        ([U(f"urn:vigo:envoy:{uuid.uuid4()}"), U("urn:vigo:server-lite")], "both server and envoy"),
    ],
)
def test_bad_identities_are_refused(sans: list, message: str, tmp_path: Path) -> None:
    pem = rogue_cert(sans)
    with pytest.raises(pki.IdentityError, match=message):
        pki.identity_from_peercert(decode(pem, tmp_path))
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    with pytest.raises(pki.IdentityError, match=message):
        pki.identity_from_der(der)
