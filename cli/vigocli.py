"""``vigocli`` -- the operator/admin command, talking to the server lite's HTTP API.

One module per verb group (``vigocli_tokens``, ``vigocli_envoys``, ``vigocli_swarm``),
each with ``register(subparsers, common)``; ``common`` is the parent
parser carrying the global options so they work before or after the verb. Connection
settings and the HTTP client live in ``vigocli_admin``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import vigocli_envoys, vigocli_swarm, vigocli_tokens
from ._common import run_main

GROUPS = (vigocli_tokens, vigocli_envoys, vigocli_swarm)

DESCRIPTION = """\
The Vigo operator command. It talks to the server lite's admin API over HTTPS with the
admin bearer token (the server writes it to <data-dir>/admin.token, mode 0600).

Connection settings, strongest first: flags, environment, then the config file
(~/.config/vigo/vigocli.yaml, or $VIGOCLI_CONFIG; keys: server, admin_token_file, ca_file;
unknown keys are refused):
  --server URL            VIGO_SERVER
  --admin-token-file F    VIGO_ADMIN_TOKEN_FILE   (preferred: a flag shows in `ps`)
  --admin-token T         VIGO_ADMIN_TOKEN
  --ca-file F             VIGO_CA_FILE            (the fleet CA, <data-dir>/ca/ca.pem)"""

EPILOG = """\
exit status:
  0  success
  1  failed (e.g. not found, server error), reason on stderr
  2  bad arguments or configuration (missing server/token, unknown config key)
  3  the server could not be reached
  4  the server refused (wrong admin token, forbidden)
  5  the server's certificate does not verify against --ca-file

examples:
  vigocli --server https://vigo:8443 --admin-token-file /srv/vigo/admin.token \\
          --ca-file /srv/vigo/ca/ca.pem token create --max-uses 10 --ttl-s 86400
  vigocli envoys list --json
  vigocli envoys revoke 0b7c5d1e-…
  vigocli swarm filecast distribute ./motd --target etc/motd
  vigocli swarm filecast status --watch"""


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    g = parser.add_argument_group("connection")
    g.add_argument(
        "--server",
        metavar="URL",
        default=default,
        help="the server lite, e.g. https://vigo.example.net:8443",
    )
    g.add_argument(
        "--admin-token-file",
        metavar="FILE",
        default=default,
        help="file holding the admin bearer token",
    )
    g.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=default,
        help="the admin bearer token itself (visible to other local users)",
    )
    g.add_argument(
        "--ca-file",
        metavar="FILE",
        default=default,
        help="the fleet CA certificate used to verify the server",
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="config file (default ~/.config/vigo/vigocli.yaml)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default, help="machine-readable JSON output"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log HTTP details to stderr"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigocli",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, None)
    # The same options on every leaf, defaulting to "absent" so that a value given
    # before the verb is not overwritten by the leaf's default.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for group in GROUPS:
        group.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("vigocli", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
