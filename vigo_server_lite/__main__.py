"""``vigo-server-lite serve``: run the server lite until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from .config import build_config
from .errors import ServerLiteError
from .server import ServerLite

log = logging.getLogger("vigo_server_lite")

DESCRIPTION = """\
The Vigo server lite: the fleet CA, join tokens, enrollment, the envoy registry and
check-in, and the filecast authority (signed manifest records, the seed directory), as a
JSON API over HTTPS under /api/v1 (OpenAPI at /api/v1/openapi.json).

On first start it creates, in the data dir: the fleet CA (ca/, key mode 0600), its own
TLS certificate (tls/), the admin bearer token (admin.token, mode 0600 -- only its path
is ever printed) and the SQLite database (server.db). Later starts reuse them; the TLS
certificate is reissued when the advertised names change. Filecast keeps its manifest in
swarm/manifest.db and the blobs it distributes in seed/ (see docs/filecast.md)."""

EPILOG = """\
configuration: flags > <data-dir>/server.yaml (keys: listen, advertise,
checkin_interval_s, filecast_max_upload_bytes; unknown keys are refused) > defaults.

exit status: 0 after SIGTERM/SIGINT, 2 for bad flags or configuration, 1 when the data
dir cannot be prepared or the port cannot be bound."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigo-server-lite",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the server until SIGTERM/SIGINT",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state directory (default $VIGO_SERVER_DATA or /srv/vigo)",
    )
    serve.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="address to listen on (default 0.0.0.0:8443; port 0 = any free)",
    )
    serve.add_argument(
        "--advertise",
        nargs="+",
        default=None,
        metavar="NAME_OR_IP",
        help="names/addresses envoys use to reach this server; they go on "
        "the server certificate and no envoy may enroll under them",
    )
    serve.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write a JSON note (url, port, ca_file, admin_token_file) here once listening",
    )
    serve.add_argument(
        "--checkin-interval-s",
        type=int,
        default=None,
        metavar="N",
        help="seconds between envoy check-ins (default 30)",
    )
    serve.add_argument(
        "--filecast-max-upload-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest file `vigocli swarm filecast distribute` may upload; the server "
        "holds the upload in memory (default 268435456 = 256 MiB)",
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="server.yaml to read (default <data-dir>/server.yaml)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    return parser


async def _serve_until_signalled(server: ServerLite) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (trio's strict groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = build_config(
            data_dir=args.data_dir,
            config_file=args.config,
            listen=args.listen,
            advertise=args.advertise,
            checkin_interval_s=args.checkin_interval_s,
            ready_file=args.ready_file,
            filecast_max_upload_bytes=args.filecast_max_upload_bytes,
        )
    except ServerLiteError as exc:
        print(f"vigo-server-lite: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_serve_until_signalled, ServerLite(config))
    except BaseException as exc:  # unwrapped below; anything unexpected is re-raised
        err = _unwrap(exc)
        if isinstance(err, ServerLiteError):
            print(f"vigo-server-lite: {err}", file=sys.stderr)
            return 1
        if isinstance(err, OSError):
            where = f"{config.listen_host}:{config.listen_port}"
            print(f"vigo-server-lite: cannot listen on {where}: {err}", file=sys.stderr)
            return 1
        if isinstance(err, KeyboardInterrupt):
            return 0
        raise
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
