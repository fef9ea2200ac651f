"""How ``vigocli`` reaches the server lite: settings resolution and the admin HTTP client.

Settings, strongest first: flags, environment, config file, nothing::

    --server URL            VIGO_SERVER            server:            (config file)
    --admin-token T         VIGO_ADMIN_TOKEN
    --admin-token-file F    VIGO_ADMIN_TOKEN_FILE  admin_token_file:
    --ca-file F             VIGO_CA_FILE           ca_file:

The config file is ``$VIGOCLI_CONFIG`` or ``~/.config/vigo/vigocli.yaml`` (honouring
``XDG_CONFIG_HOME``); unknown keys are refused. Every failure becomes a ``CLIError``
with a clear message and a distinct exit code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_FAILURE,
    EXIT_REFUSED,
    EXIT_TRUST,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CLIError,
)

CONFIG_KEYS = frozenset({"server", "admin_token_file", "ca_file"})
TIMEOUT_S = 30.0


def default_config_path() -> Path:
    if "VIGOCLI_CONFIG" in os.environ:
        return Path(os.environ["VIGOCLI_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vigo" / "vigocli.yaml"


def load_config_file(path: Path) -> dict[str, str]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc}", EXIT_USAGE) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CLIError(f"{path} is not valid YAML: {exc}", EXIT_USAGE) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"{path}: the top level must be a mapping", EXIT_USAGE)
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            known = ", ".join(sorted(CONFIG_KEYS))
            raise CLIError(f"{path}: unknown key {key!r} (known keys: {known})", EXIT_USAGE)
        if not isinstance(value, str):
            raise CLIError(f"{path}: {key!r} must be a string", EXIT_USAGE)
    return {str(k): str(v) for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class Settings:
    server: str
    admin_token: str
    ca_file: Path | None


def _read_token_file(path: Path, origin: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CLIError(
            f"cannot read the admin token file {path} ({origin}): {exc.strerror or exc}", EXIT_USAGE
        ) from exc
    if not token:
        raise CLIError(f"the admin token file {path} ({origin}) is empty", EXIT_USAGE)
    return token


def resolve_settings(args: argparse.Namespace) -> Settings:
    given = getattr(args, "config", None)
    config_path = Path(given) if given else default_config_path()
    file = load_config_file(config_path)
    env = os.environ
    server = args.server or env.get("VIGO_SERVER") or file.get("server")
    if not server:
        raise CLIError(
            "no server given: pass --server URL, set VIGO_SERVER, or put "
            f"'server:' in {config_path}",
            EXIT_USAGE,
        )
    if args.admin_token:
        token = args.admin_token.strip()
    elif args.admin_token_file:
        token = _read_token_file(Path(args.admin_token_file), "--admin-token-file")
    elif env.get("VIGO_ADMIN_TOKEN"):
        token = env["VIGO_ADMIN_TOKEN"].strip()
    elif env.get("VIGO_ADMIN_TOKEN_FILE"):
        token = _read_token_file(Path(env["VIGO_ADMIN_TOKEN_FILE"]), "VIGO_ADMIN_TOKEN_FILE")
    elif file.get("admin_token_file"):
        token = _read_token_file(Path(file["admin_token_file"]).expanduser(), str(config_path))
    else:
        raise CLIError(
            "no admin token given: pass --admin-token-file FILE (the server's "
            "<data-dir>/admin.token), set VIGO_ADMIN_TOKEN_FILE, or put "
            f"'admin_token_file:' in {config_path}",
            EXIT_USAGE,
        )
    ca = args.ca_file or env.get("VIGO_CA_FILE") or file.get("ca_file")
    ca_file = Path(ca).expanduser() if ca else None
    if ca_file is not None and not ca_file.is_file():
        raise CLIError(f"the CA file {ca_file} does not exist", EXIT_USAGE)
    return Settings(server.rstrip("/"), token, ca_file)


# HTTP status -> exit code for server refusals (the message comes from the server).
_STATUS_EXIT = {
    400: EXIT_USAGE,
    401: EXIT_REFUSED,
    403: EXIT_REFUSED,
    404: EXIT_FAILURE,
    413: EXIT_USAGE,
}


class AdminClient:
    """Synchronous calls to the admin API; JSON in, JSON out, CLIError on any failure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.settings.ca_file))
        url = f"{self.settings.server}/api/v1{path}"
        headers = {"authorization": f"Bearer {self.settings.admin_token}"}
        try:
            with httpx.Client(verify=verify, timeout=TIMEOUT_S, trust_env=False) as client:
                resp = client.request(method, url, json=body, headers=headers)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower():
                raise CLIError(
                    f"{self.settings.server}: the server certificate does not verify ({exc}); "
                    "pass --ca-file with the fleet CA (<data-dir>/ca/ca.pem)",
                    EXIT_TRUST,
                ) from exc
            raise CLIError(f"cannot reach {self.settings.server}: {exc}", EXIT_UNREACHABLE) from exc
        except httpx.InvalidURL as exc:
            raise CLIError(f"bad server URL {self.settings.server!r}: {exc}", EXIT_USAGE) from exc
        except httpx.HTTPError as exc:
            raise CLIError(
                f"{self.settings.server}: {type(exc).__name__}: {exc}", EXIT_UNREACHABLE
            ) from exc
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if resp.status_code >= 300:
            raise _server_error(resp.status_code, answer)
        if answer is None:
            raise CLIError(
                f"{self.settings.server} answered {method} {path} without JSON", EXIT_FAILURE
            )
        return answer


def _server_error(status: int, answer: Any) -> CLIError:
    err = answer.get("error") if isinstance(answer, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    if status == 401:
        text = (
            "the server refused the admin token (unauthorized): check --admin-token-file "
            "or VIGO_ADMIN_TOKEN_FILE"
        )
    elif isinstance(message, str) and message:
        text = f"{message} ({code})" if code else message
    else:
        text = f"the server answered HTTP {status}"
    return CLIError(text, _STATUS_EXIT.get(status, EXIT_FAILURE))


def client_for(args: argparse.Namespace) -> AdminClient:
    return AdminClient(resolve_settings(args))


def when(epoch: object) -> str:
    """Unix seconds as a short UTC timestamp for tables ('-' for never)."""
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
