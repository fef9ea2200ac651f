"""``vigo enroll``: enroll this host with the server lite using a join token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TRUST,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CLIError,
    emit_json,
)

DESCRIPTION = """\
Enroll this host with the Vigo server lite, once, using a join token from
`vigocli token create`.

The token pins the fleet CA by its SHA-256 fingerprint. `vigo enroll` first fetches the
server's CA certificate without trusting the connection and compares fingerprints; if
they differ it stops before making a key or sending anything (exit 5). Otherwise it
generates this host's private key locally (written mode 0600; it never leaves the host),
sends a certificate signing request over a connection verified against that CA and the
server's name, and stores the result in <state-dir>/identity/:

  key.pem     the private key (0600)
  cert.pem    the envoy certificate: the client UUID the server assigned and the hostname
  ca.pem      the fleet CA certificate
  envoy.json  uuid, hostname, server_url, authority_public_key, checkin_interval_s,
              enrolled_at (written last: its presence means "enrolled")

Enrolling a hostname again (with --force) makes the server revoke the previous
certificate of that hostname; peers refuse it after their next check-in."""

EPILOG = """\
exit status:
  0  enrolled
  1  failed for another reason (stated on stderr)
  2  bad arguments (malformed token or URL), or already enrolled without --force
  3  the server could not be reached
  4  the server refused: token unknown, expired, used up or revoked; bad hostname
  5  the server is not the one the token pins (CA fingerprint mismatch); nothing was sent

example:
  vigo enroll --server https://vigo.example.net:8443 --token vigo1.0c1d2e3f.…"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enroll",
        help="enroll this host with the server lite (once)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="the server lite, e.g. https://vigo.example.net:8443",
    )
    parser.add_argument(
        "--token", required=True, metavar="TOKEN", help="join token vigo1.<id>.<secret>.<ca-sha256>"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="envoy state directory (default $VIGO_STATE_DIR or /var/lib/vigo)",
    )
    parser.add_argument(
        "--hostname",
        default=None,
        metavar="NAME",
        help="hostname to enroll under (default: this machine's host name)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="enroll again even if the state dir already holds an identity",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _exit_code(code: str) -> int:
    """``EnrollError.code`` to exit status (``Refused`` is handled apart: always 4)."""
    return {
        "trust": EXIT_TRUST,
        "unreachable": EXIT_UNREACHABLE,
        "token_malformed": EXIT_USAGE,
        "bad_url": EXIT_USAGE,
        "already_enrolled": EXIT_USAGE,
    }.get(code, EXIT_FAILURE)


def run(args: argparse.Namespace) -> int:
    import trio

    from vigo_agent.enroll import EnrollError, Refused, enroll
    from vigo_agent.paths import default_state_dir

    state_dir: Path = args.state_dir or default_state_dir()
    try:
        result = trio.run(
            lambda: enroll(
                args.server, args.token, state_dir, hostname=args.hostname, force=args.force
            )
        )
    except Refused as exc:
        raise CLIError(f"enrollment refused ({exc.code}): {exc.message}", EXIT_REFUSED) from exc
    except EnrollError as exc:
        raise CLIError(exc.message, _exit_code(exc.code)) from exc
    if args.json:
        emit_json(
            {
                "uuid": str(result.uuid),
                "hostname": result.hostname,
                "server_url": result.server_url,
                "checkin_interval_s": result.checkin_interval_s,
                "certificate_serial": format(result.certificate_serial, "x"),
                "state_dir": str(state_dir),
            }
        )
    else:
        sys.stdout.write(f"enrolled {result.hostname} as {result.uuid}\n")
    return EXIT_OK
