"""``vigocli swarm filecast distribute|list|status|revoke``: fleet-wide file distribution.

Talks to the server lite's ``/api/v1/swarm/filecast`` endpoints with the admin token.
Rendering for people is in ``vigocli_swarm_view`` (pure); this module parses arguments,
makes the calls and runs the live status view.
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from . import vigocli_seeders
from . import vigocli_swarm_view as view
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_TRUST,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CLIError,
    add_group,
    add_verb,
    emit_json,
    emit_table,
)
from .vigocli_admin import TIMEOUT_S, client_for, resolve_settings
from .vigocli_admin import _server_error as server_error

UPLOAD_TIMEOUT_S = 600.0
UPLOAD_READ_BYTES = 1 << 20
SHOW_UPLOAD_PROGRESS_BYTES = 8 << 20
MIN_INTERVAL_S = 0.2

SWARM_DESCRIPTION = """\
The swarm is the peer-to-peer layer between the envoys of the fleet. From the server side
an operator drives one of its subsystems, filecast, and says which envoys are seeders
(may publish the NAME + NAME.swarm sidecars of their seed directories)."""

FILECAST_DESCRIPTION = """\
filecast pushes a file to every envoy of the fleet. `distribute` uploads it to the server,
which stores it in its seed directory, signs a manifest record naming the blob (by
SHA-256) and a target path, and hands the record to envoys at their next manifest sync.
Envoys fetch the blob's chunks from each other (and from the server as a last resort),
verify every chunk, and link it at /var/lib/vigo/swarm/files/<target>. A file dropped
with a NAME.swarm sidecar into a seeder's seed directory is distributed the same way (see
`vigocli swarm seeders`); `list` and `status` show where each record came from.

One target holds one file: distributing to the same target again replaces it everywhere;
`revoke` removes it everywhere, also from envoys that were offline at the time. Only the
server can sign these records; envoys refuse any other signer."""

EPILOG = """\
exit status:
  0  success (status --watch: every live record is materialized on every envoy)
  1  failed (e.g. no such target to revoke, server error), reason on stderr
  2  bad arguments: a bad target path, retention or chunk size; file too large
  3  the server could not be reached
  4  the server refused the admin token
  5  the server's certificate does not verify against --ca-file
  130  interrupted (Ctrl-C)

examples:
  vigocli swarm filecast distribute ./motd --target etc/motd
  vigocli swarm filecast distribute ./tool.tgz --target opt/tool.tgz \\
          --retention expires_at:1767225600 --chunk-bytes 4194304
  vigocli swarm filecast status --watch
  vigocli swarm filecast list --json
  vigocli swarm filecast revoke --target etc/motd"""


def _retention(value: str) -> str:
    from vigo_swarm.manifest import InvalidRetention, parse_retention

    try:  # the server checks too; the same parser says what is wrong before an upload
        parse_retention(value, time.time())
    except InvalidRetention as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return value


def _verb(verbs: Any, common: argparse.ArgumentParser, name: str, short: str, long: str) -> Any:
    return add_verb(verbs, common, name, short, long, EPILOG)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    swarm = add_group(
        subparsers,
        "swarm",
        "the swarm: filecast (fleet-wide file distribution) and its seeders",
        SWARM_DESCRIPTION,
    )
    systems = swarm.add_subparsers(dest="swarm_system", metavar="SUBSYSTEM", required=True)
    filecast = add_group(
        systems,
        "filecast",
        "distribute files to every envoy; list, watch and revoke them",
        FILECAST_DESCRIPTION,
        EPILOG,
    )
    verbs = filecast.add_subparsers(dest="filecast_verb", metavar="VERB", required=True)

    dist = _verb(
        verbs,
        common,
        "distribute",
        "upload a file and distribute it to every envoy",
        "Upload FILE to the server and distribute it to every envoy at --target (a path "
        "relative to the envoys' files directory). The server checks the target (relative, "
        "no '..', no NUL or backslash, at most 1024 bytes), seeds the blob and signs its "
        "record; a file already at that target is replaced. The server holds the upload "
        "in memory; its size limit is its filecast_max_upload_bytes (default 256 MiB).",
    )
    dist.add_argument("file", metavar="FILE", type=Path, help="the file to distribute")
    dist.add_argument(
        "--target", required=True, metavar="PATH", help="where envoys link it, e.g. etc/motd"
    )
    dist.add_argument(
        "--retention",
        type=_retention,
        default="until_revoked",
        metavar="POLICY",
        help="until_revoked (default): kept until revoked or replaced; pinned: kept, and "
        "its blob never collected, while the record lives; expires_at:UNIX: dropped by "
        "every envoy after that time (Unix seconds)",
    )
    dist.add_argument(
        "--chunk-bytes",
        type=int,
        default=None,
        metavar="N",
        help="chunk size, a power of two from 65536 to 16777216 (default 1048576, or "
        "the chunking the server already has for the same bytes)",
    )
    dist.set_defaults(func=distribute)

    lst = _verb(
        verbs,
        common,
        "list",
        "list filecast records and recent revocations",
        "List every filecast record the server holds (target, blob, size, retention, when "
        "it was distributed) and the most recent revocations.",
    )
    lst.set_defaults(func=list_records)

    status = _verb(
        verbs,
        common,
        "status",
        "per-envoy progress of every live record",
        "Show, for every live record and every active envoy, what the envoy reported at "
        "its last check-in: missing, partial (chunks so far), complete (verified, not yet "
        "linked), materialized (linked at its target) or error; unknown if it has not "
        "reported the blob. --watch redraws the view until every live record is "
        "materialized on every envoy (exit 0) or Ctrl-C (exit 130); without a terminal it "
        "prints the view each time it changes. --json prints one snapshot.",
    )
    status.add_argument("--watch", action="store_true", help="keep the view live")
    status.add_argument(
        "--interval-s",
        type=float,
        default=1.0,
        metavar="S",
        help=f"seconds between refreshes with --watch (default 1, at least {MIN_INTERVAL_S})",
    )
    status.set_defaults(func=show_status)

    revoke = _verb(
        verbs,
        common,
        "revoke",
        "remove a target from every envoy",
        "Revoke the record of --target: the server signs a tombstone, every envoy removes "
        "the link (envoys offline now do so when they come back), and the blob is "
        "collected per its retention.",
    )
    revoke.add_argument("--target", required=True, metavar="PATH", help="the target to revoke")
    revoke.set_defaults(func=revoke_target)
    vigocli_seeders.register(systems, common)


# -------------------------------------------------------------------- distribute


def _open_upload(path: Path) -> tuple[IO[bytes], int]:
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed by the caller
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    info = os.fstat(f.fileno())
    if not stat.S_ISREG(info.st_mode):
        f.close()
        raise CLIError(f"{path} is not a regular file", EXIT_USAGE)
    return f, info.st_size


def _body(f: IO[bytes], size: int, show: bool) -> Iterator[bytes]:
    """Exactly ``size`` bytes of ``f`` (the Content-Length already sent)."""
    sent = 0
    while sent < size:
        piece = f.read(min(UPLOAD_READ_BYTES, size - sent))
        if not piece:
            raise CLIError(f"{f.name} shrank to {sent} bytes while it was being uploaded")
        sent += len(piece)
        if show:
            sys.stderr.write(f"\ruploading {sent * 100 // size:3d}% of {size} bytes")
            sys.stderr.flush()
        yield piece
    if show:
        sys.stderr.write("; the server is seeding and signing it\n")


def distribute(args: argparse.Namespace) -> int:
    from vigo_swarm.manifest import InvalidTarget, validate_target

    try:  # the server checks too; checking here saves uploading the file for nothing
        validate_target(args.target)
    except InvalidTarget as exc:
        raise CLIError(f"--target: {exc.reason}", EXIT_USAGE) from None
    client = client_for(args)
    f, size = _open_upload(args.file)
    with f:
        limit = client.call("GET", "/swarm/filecast").get("max_upload_bytes")
        if isinstance(limit, int) and size > limit:
            raise CLIError(
                f"{args.file} is {size} bytes; the server accepts at most {limit} "
                "(its filecast_max_upload_bytes)",
                EXIT_USAGE,
            )
        params = {"target": args.target, "retention": args.retention}
        if args.chunk_bytes is not None:
            params["chunk_bytes"] = str(args.chunk_bytes)
        show = sys.stderr.isatty() and not args.json and size >= SHOW_UPLOAD_PROGRESS_BYTES
        answer = upload(args, params, _body(f, size, show), size)
    if args.json:
        emit_json(answer)
    else:
        sys.stdout.write("".join(line + "\n" for line in view.distributed_lines(answer, args.file)))
    return EXIT_OK


def upload(
    args: argparse.Namespace, params: dict[str, str], body: Iterator[bytes], size: int
) -> Any:
    """POST the body to the distribute endpoint. Failures map to exit codes as
    ``AdminClient.call`` maps them (which sends JSON bodies only)."""
    import httpx

    settings = resolve_settings(args)
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.ca_file))
    headers = {
        "authorization": f"Bearer {settings.admin_token}",
        "content-type": "application/octet-stream",
        "content-length": str(size),
    }
    timeout = httpx.Timeout(UPLOAD_TIMEOUT_S, connect=TIMEOUT_S)
    url = f"{settings.server}/api/v1/swarm/filecast"
    try:
        with httpx.Client(verify=verify, timeout=timeout, trust_env=False) as client:
            resp = client.post(url, params=params, content=body, headers=headers)
    except httpx.ConnectError as exc:
        if "certificate" in str(exc).lower():
            raise CLIError(
                f"{settings.server}: the server certificate does not verify ({exc}); "
                "pass --ca-file with the fleet CA (<data-dir>/ca/ca.pem)",
                EXIT_TRUST,
            ) from exc
        raise CLIError(f"cannot reach {settings.server}: {exc}", EXIT_UNREACHABLE) from exc
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise CLIError(
            f"{settings.server} closed the connection during the upload ({exc}); the file "
            "may be over its filecast_max_upload_bytes",
            EXIT_FAILURE,
        ) from exc
    except httpx.HTTPError as exc:
        raise CLIError(f"{settings.server}: {type(exc).__name__}: {exc}", EXIT_UNREACHABLE) from exc
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code >= 300:
        raise server_error(resp.status_code, answer)
    if not isinstance(answer, dict):
        raise CLIError(f"{settings.server} answered the upload without JSON", EXIT_FAILURE)
    return answer


# -------------------------------------------------------------------------- list


def list_records(args: argparse.Namespace) -> int:
    answer = client_for(args).call("GET", "/swarm/filecast")
    if args.json:
        emit_json(answer)
        return EXIT_OK
    if answer["records"]:
        emit_table(view.list_rows(answer), view.LIST_HEADERS)
    else:
        sys.stdout.write("no filecast records\n")
    if answer["revocations"]:
        sys.stdout.write("\nrecent revocations:\n")
        emit_table(view.revocation_rows(answer), view.REVOCATION_HEADERS)
    return EXIT_OK


# ------------------------------------------------------------------------ status


def _unicode_ok() -> bool:
    return (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"


def show_status(args: argparse.Namespace) -> int:
    if args.watch and args.json:
        raise CLIError(
            "--watch is a live view for people; --json prints one snapshot: use one", EXIT_USAGE
        )
    if args.interval_s < MIN_INTERVAL_S:
        raise CLIError(f"--interval-s must be at least {MIN_INTERVAL_S}", EXIT_USAGE)
    client = client_for(args)
    snapshot = client.call("GET", "/swarm/filecast/status")
    if args.json:
        emit_json(snapshot)
        return EXIT_OK
    unicode = _unicode_ok()
    if not args.watch:
        sys.stdout.write(
            "".join(line + "\n" for line in view.status_lines(snapshot, unicode=unicode))
        )
        return EXIT_OK
    tty = sys.stdout.isatty()
    rows, last = 0, None
    while True:
        lines = view.status_lines(snapshot, unicode=unicode)
        if tty:
            lines = view.fit(lines, shutil.get_terminal_size().columns)
            sys.stdout.write(view.redraw(lines, rows))
            rows = len(lines)
        elif lines != last:
            sys.stdout.write(("\n" if last else "") + "".join(line + "\n" for line in lines))
        sys.stdout.flush()
        last = lines
        if snapshot["totals"]["done"]:
            return EXIT_OK
        time.sleep(args.interval_s)
        snapshot = client.call("GET", "/swarm/filecast/status")


# ------------------------------------------------------------------------ revoke


def revoke_target(args: argparse.Namespace) -> int:
    answer = client_for(args).call("POST", "/swarm/filecast/revoke", {"target": args.target})
    if args.json:
        emit_json(answer)
    else:
        revoked = answer["revoked"]
        sys.stdout.write(
            f"revoked {revoked['target']} (blob {revoked['blob']}); every envoy removes it "
            "at its next manifest sync\n"
        )
    return EXIT_OK
