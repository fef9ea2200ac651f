"""Shared CLI plumbing: exit codes, error type, output helpers. No tracebacks reach a user."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

# Distinct exit codes, documented in docs/operator.md.
EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed for a reason stated on stderr
EXIT_USAGE = 2  # bad arguments or config
EXIT_UNREACHABLE = 3  # server or daemon could not be reached
EXIT_REFUSED = 4  # server/daemon refused (auth, expired/used/revoked token, permission)
EXIT_TRUST = 5  # the server is not the one the token pins (CA fingerprint mismatch)
EXIT_NOT_ENROLLED = 6  # this state dir holds no identity yet


class CLIError(Exception):
    """A failure to report on stderr as ``<prog>: <message>`` with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def emit_json(obj: Any, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    json.dump(obj, stream, indent=2, sort_keys=True, default=str)
    stream.write("\n")


def emit_table(rows: list[list[str]], headers: list[str], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    stream.write(fmt.format(*headers).rstrip() + "\n")
    for row in rows:
        stream.write(fmt.format(*row).rstrip() + "\n")


def add_verb(
    verbs: Any, common: argparse.ArgumentParser, name: str, short: str, long: str, epilog: str
) -> argparse.ArgumentParser:
    """A verb under a group: the global options, ``long`` wrapped, ``epilog`` as written."""
    parser: argparse.ArgumentParser = verbs.add_parser(
        name,
        parents=[common],
        help=short,
        description=textwrap.fill(long, 88),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_group(
    subparsers: Any, name: str, short: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A group of verbs whose description and epilog are shown as written."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=short,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    raise CLIError(message, code)


def run_main(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, dispatch to ``args.func``, and turn every failure into a message and an
    exit code: a user never sees a traceback (``--verbose`` logs it at debug)."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
        return code
    except CLIError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `… | head`: the reader left; say nothing more
        # Python's documented recipe: point stdout at devnull so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:  # the last line of defence
        logging.getLogger(prog).debug("unexpected error", exc_info=True)
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
