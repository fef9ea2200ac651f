"""The envoy's identity as enrollment left it in ``<state>/identity/``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from vigo_swarm.pki import IdentityError, identity_from_cert

from .paths import StatePaths


class NotEnrolled(Exception):
    """The state dir holds no usable identity; run ``vigo enroll`` first."""


@dataclass(frozen=True, slots=True)
class EnvoyIdentity:
    uuid: uuid.UUID
    hostname: str
    server_url: str
    authority_public_key: str
    checkin_interval_s: float
    serial: int


def load_identity(paths: StatePaths) -> EnvoyIdentity:
    """Read envoy.json (written last by enrollment) and check the files beside it.

    The serial comes from envoy.json; the certificate is parsed (a large import) only
    for state dirs enrolled before envoy.json carried it.
    """
    try:
        info: Any = json.loads(paths.envoy_json.read_text())
        for needed in (paths.key, paths.cert, paths.ca):
            if not needed.is_file():
                raise FileNotFoundError(needed)
    except FileNotFoundError as exc:
        raise NotEnrolled(f"{paths.root} is not enrolled (missing {exc.args[0]})") from exc
    except (OSError, ValueError) as exc:
        raise NotEnrolled(f"{paths.root}: identity files unreadable: {exc}") from exc
    try:
        envoy_uuid = uuid.UUID(str(info["uuid"]))
        raw = info.get("certificate_serial")  # hex, as enrollment writes it
        serial = int(raw, 16) if isinstance(raw, str) else _serial_from_cert(paths, envoy_uuid)
        return EnvoyIdentity(
            uuid=envoy_uuid,
            hostname=str(info["hostname"]),
            server_url=str(info["server_url"]),
            authority_public_key=str(info["authority_public_key"]),
            checkin_interval_s=float(info.get("checkin_interval_s", 30)),
            serial=serial,
        )
    except (KeyError, TypeError, ValueError, IdentityError) as exc:
        raise NotEnrolled(f"{paths.envoy_json}: incomplete or invalid: {exc}") from exc


def _serial_from_cert(paths: StatePaths, envoy_uuid: uuid.UUID) -> int:
    from cryptography import x509

    from_cert = identity_from_cert(x509.load_pem_x509_certificate(paths.cert.read_bytes()))
    if from_cert.uuid != envoy_uuid:
        raise IdentityError(f"{paths.cert} names {from_cert.uuid}, envoy.json {envoy_uuid}")
    return from_cert.serial
