"""The server lite's data dir, prepared on every start (created on the first one).

Layout (all under ``--data-dir``, default ``/srv/vigo``; the dir itself is 0700)::

    ca/ca.pem, ca/ca.key (0600), ca/authority.key (0600), ca/authority.pub
    tls/server.pem      the server's own certificate, issued by the fleet CA for the
                        advertise names + 127.0.0.1, ::1, localhost and the host name;
                        reissued when those names change, the CA changed, or it nears expiry
    tls/server.key      its key (0600)
    admin.token         the admin bearer token (0600); only its *path* is ever printed
    server.db           SQLite (WAL) database
    server.yaml         optional configuration (see config.py)
    swarm/manifest.db   the filecast authority's manifest (SQLite, see authority.py)
    seed/               the blobs it distributes and their infos (see seed.py)

Everything here is blocking; the server calls ``prepare`` from a worker thread.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from vigo_swarm.pki import (
    SERVER_URI,
    generate_key,
    key_to_pem,
    write_public_file,
    write_secret_file,
)

from .ca import CAError, FleetCA
from .config import ServerConfig
from .db import Store
from .errors import SetupError

log = logging.getLogger(__name__)

RENEW_BEFORE = dt.timedelta(days=30)
_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104


@dataclass(frozen=True, slots=True)
class DataPaths:
    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls" / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "server.key"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def database(self) -> Path:
        return self.root / "server.db"

    @property
    def manifest_db(self) -> Path:
        return self.root / "swarm" / "manifest.db"

    @property
    def seed_dir(self) -> Path:
        return self.root / "seed"


@dataclass(slots=True)
class Prepared:
    paths: DataPaths
    ca: FleetCA
    server_names: tuple[str, ...]
    admin_token: str
    store: Store


def server_names(config: ServerConfig) -> tuple[str, ...]:
    """Every name the server certificate covers (and no envoy may enroll under)."""
    names = list(config.advertise)
    if config.listen_host not in _WILDCARDS:
        names.append(config.listen_host)
    names += ["127.0.0.1", "::1", "localhost", socket.gethostname()]
    canonical = []
    for name in names:
        try:
            canonical.append(str(ipaddress.ip_address(name)))
        except ValueError:
            canonical.append(name.lower().rstrip("."))
    return tuple(dict.fromkeys(n for n in canonical if n))


def prepare(config: ServerConfig) -> Prepared:
    paths = DataPaths(config.data_dir)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.root.chmod(0o700)
        ca = FleetCA.load_or_create(paths.ca_dir)
        names = server_names(config)
        ensure_server_cert(ca, paths, names)
        token = load_or_create_admin_token(paths.admin_token)
    except CAError as exc:
        raise SetupError(str(exc)) from exc
    except OSError as exc:
        raise SetupError(f"cannot prepare the data dir {paths.root}: {exc}") from exc
    try:
        # SQLite gives its -wal and -shm files the database file's mode: create it 0600.
        os.close(os.open(paths.database, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        paths.tls_key.parent.chmod(0o700)
    except OSError as exc:
        raise SetupError(f"cannot create the database {paths.database}: {exc}") from exc
    store = Store(paths.database)
    return Prepared(paths, ca, names, token, store)


def _wanted_sans(names: tuple[str, ...]) -> set[str]:
    out = {f"uri:{SERVER_URI}"}
    for name in names:
        try:
            out.add(f"ip:{ipaddress.ip_address(name)}")
        except ValueError:
            out.add(f"dns:{name}")
    return out


def _cert_sans(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        {f"uri:{u}" for u in san.get_values_for_type(x509.UniformResourceIdentifier)}
        | {f"ip:{a}" for a in san.get_values_for_type(x509.IPAddress)}
        | {f"dns:{d.lower()}" for d in san.get_values_for_type(x509.DNSName)}
    )


def _needs_reissue(ca: FleetCA, cert_path: Path, key_path: Path, names: tuple[str, ...]) -> str:
    """Why the server certificate must be (re)issued, or '' when it is fine."""
    if not cert_path.exists() or not key_path.exists():
        return "none yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca.cert)
        sans = _cert_sans(cert)
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return "not issued by the current fleet CA"
    if sans != _wanted_sans(names):
        return "the server names changed"
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return "it expires soon"
    return ""


def ensure_server_cert(ca: FleetCA, paths: DataPaths, names: tuple[str, ...]) -> None:
    why = _needs_reissue(ca, paths.tls_cert, paths.tls_key, names)
    if not why:
        return
    key = generate_key()
    issued = ca.issue_server(list(names), key)
    write_secret_file(paths.tls_key, key_to_pem(key))
    write_public_file(paths.tls_cert, issued.pem)
    log.info("issued the server certificate (%s) for %s", why, ", ".join(names))


def load_or_create_admin_token(path: Path) -> str:
    if not path.exists():
        write_secret_file(path, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
        log.info("created the admin token in %s", path)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    token = path.read_text(encoding="ascii").strip()
    if len(token) < 16:
        raise SetupError(f"{path}: the admin token is empty or too short (delete the file)")
    return token
