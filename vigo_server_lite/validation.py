"""What clients send, checked before anything is done with it. Pure: no IO, no clock.

Each ``parse_*`` function takes the decoded JSON body and returns a frozen dataclass, or
raises ``Refusal`` (400) naming the field and what is wrong with it. Unknown fields are
refused too: a typo in a client must not be silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Refusal, bad_request
from .filecast import Progress, parse_progress

MAX_HOSTNAME_CHARS = 253
MAX_ADDRESSES = 32
MAX_DESCRIPTION_CHARS = 200
MAX_TTL_S = 366 * 86400
MAX_TOKEN_USES = 100_000
MAX_CSR_CHARS = 8192
DEFAULT_TOKEN_TTL_S = 3600
DEFAULT_TOKEN_MAX_USES = 1

_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _object(body: Any, allowed: Collection[str], what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"the {what} body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in the {what} body")
    return body


def _int(body: Mapping[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if value is None:
        raise bad_request(f"field {key!r} is required")
    # bool is an int in Python, never in our API
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"field {key!r} must be an integer")
    if not lo <= value <= hi:
        raise bad_request(f"field {key!r} must be between {lo} and {hi}, not {value}")
    return value


# ------------------------------------------------------------------------- hostnames


def normalize_hostname(value: object, *, reserved: Collection[str] = ()) -> str:
    """An RFC 1123 host name, lower-cased, or ``Refusal(400, "bad_hostname")``.

    ``reserved`` holds the server's own names: an envoy certificate naming one of them
    could be mistaken for the server by a client that checks host names.
    """

    def bad(why: str) -> Refusal:
        return Refusal(400, "bad_hostname", f"hostname {str(value)[:80]!r} is refused: {why}")

    if not isinstance(value, str):
        raise Refusal(400, "bad_hostname", "hostname must be a string")
    name = value.lower()
    if not name:
        raise bad("it is empty")
    if len(name) > MAX_HOSTNAME_CHARS:
        raise bad(f"it is longer than {MAX_HOSTNAME_CHARS} characters")
    if not name.isascii():
        raise bad("it must be ASCII (use the IDNA 'xn--' form)")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise bad("it is an IP address, not a host name")
    for label in name.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise bad(
                "each dot-separated label must be 1-63 letters, digits or '-', "
                "not starting or ending with '-'"
            )
    if name in {r.lower() for r in reserved}:
        raise bad("it is one of the server lite's own names")
    return name


# --------------------------------------------------------------------------- enroll


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    token: object  # parsed by tokens.parse_token, which has its own error code
    csr_pem: bytes
    hostname: object  # checked by normalize_hostname against the server's names


def parse_enroll(body: Any) -> EnrollRequest:
    obj = _object(body, ("token", "csr", "hostname"), "enroll")
    csr = obj.get("csr")
    if not isinstance(csr, str) or not csr.strip():
        raise Refusal(400, "bad_csr", "field 'csr' must be a PEM certificate signing request")
    if len(csr) > MAX_CSR_CHARS or not csr.isascii():
        raise Refusal(400, "bad_csr", "field 'csr' is not a PEM certificate signing request")
    return EnrollRequest(obj.get("token"), csr.encode("ascii"), obj.get("hostname"))


# -------------------------------------------------------------------------- checkin


@dataclass(frozen=True, slots=True)
class CheckinRequest:
    addresses: tuple[str, ...]
    port: int
    manifest_version: int | None
    hostname: str | None  # reported, informational; identity comes from the certificate
    filecast: tuple[Progress, ...] | None = None  # None: no report, keep the last one


def parse_checkin(body: Any) -> CheckinRequest:
    obj = _object(
        body, ("addresses", "port", "manifest_version", "hostname", "filecast"), "check-in"
    )
    raw = obj.get("addresses", [])
    if not isinstance(raw, list):
        raise bad_request("field 'addresses' must be a list of IP addresses")
    if len(raw) > MAX_ADDRESSES:
        raise bad_request(f"field 'addresses' holds more than {MAX_ADDRESSES} entries")
    addresses: list[str] = []
    for item in raw:
        if not isinstance(item, str):
            raise bad_request("field 'addresses' must hold strings")
        try:
            addr = ipaddress.ip_address(item)
        except ValueError:
            raise bad_request(f"{item[:60]!r} in 'addresses' is not an IP address") from None
        if addr.is_unspecified or addr.is_multicast:
            raise bad_request(f"{item!r} in 'addresses' cannot be dialled")
        if str(addr) not in addresses:
            addresses.append(str(addr))
    port = _int(obj, "port", None, 1, 65535)
    version = obj.get("manifest_version")
    if version is not None:
        version = _int(obj, "manifest_version", None, 0, 2**63 - 1)
    hostname = obj.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or len(hostname) > 253):
        raise bad_request("field 'hostname' must be a string of at most 253 characters")
    filecast = parse_progress(obj["filecast"]) if "filecast" in obj else None
    return CheckinRequest(tuple(addresses), port, version, hostname, filecast)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class TokenCreate:
    ttl_s: int
    max_uses: int
    description: str


def parse_token_create(body: Any) -> TokenCreate:
    obj = _object(body, ("ttl_s", "max_uses", "description"), "token")
    ttl_s = _int(obj, "ttl_s", DEFAULT_TOKEN_TTL_S, 1, MAX_TTL_S)
    max_uses = _int(obj, "max_uses", DEFAULT_TOKEN_MAX_USES, 1, MAX_TOKEN_USES)
    description = obj.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise bad_request(
            f"field 'description' must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
        )
    if any(ord(c) < 32 for c in description):
        raise bad_request("field 'description' must not contain control characters")
    return TokenCreate(ttl_s, max_uses, description)
