"""``vigo`` — the envoy-side command: enroll, run the daemon, ask it about the swarm.

One module per verb (``cmd_*.py``), each with ``register(subparsers)``; heavy imports
happen inside the verb so ``vigo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import cmd_agent, cmd_enroll, cmd_swarm
from ._common import EXIT_FAILURE, EXIT_USAGE, CLIError

DESCRIPTION = """\
The Vigo envoy command. An envoy enrolls once with the server lite (`vigo enroll`),
then runs the daemon (`vigo agent run`), which finds its peers and serves the swarm
over mutual TLS on TCP 1531. The `vigo swarm` verbs ask the running daemon over its
local control socket, which identifies you by your uid."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    cmd_enroll.register(sub)
    cmd_agent.register(sub)
    cmd_swarm.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
        return code
    except CLIError as exc:
        print(f"vigo: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: no traceback to a user
        logging.getLogger("vigo").debug("unexpected error", exc_info=True)
        print(f"vigo: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

_ = EXIT_USAGE
