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
    from cryptography import x509

    try:
        info: Any = json.loads(paths.envoy_json.read_text())
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        for needed in (paths.key, paths.ca):
            if not needed.is_file():
                raise FileNotFoundError(needed)
    except FileNotFoundError as exc:
        raise NotEnrolled(f"{paths.root} is not enrolled (missing {exc.args[0]})") from exc
    except (OSError, ValueError) as exc:
        raise NotEnrolled(f"{paths.root}: identity files unreadable: {exc}") from exc
    try:
        from_cert = identity_from_cert(cert)
        envoy_uuid = uuid.UUID(str(info["uuid"]))
        ident = EnvoyIdentity(
            uuid=envoy_uuid,
            hostname=str(info["hostname"]),
            server_url=str(info["server_url"]),
            authority_public_key=str(info["authority_public_key"]),
            checkin_interval_s=float(info.get("checkin_interval_s", 30)),
            serial=from_cert.serial,
        )
    except (KeyError, TypeError, ValueError, IdentityError) as exc:
        raise NotEnrolled(f"{paths.envoy_json}: incomplete or invalid: {exc}") from exc
    if from_cert.uuid != envoy_uuid:
        raise NotEnrolled(f"{paths.cert} names {from_cert.uuid}, envoy.json {envoy_uuid}")
    return ident
