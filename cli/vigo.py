"""``vigo`` — the envoy-side command: enroll, run the daemon, ask it about the swarm.

One module per verb (``cmd_*.py``), each with ``register(subparsers)``; heavy imports
happen inside the verb so ``vigo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import cmd_agent, cmd_enroll, cmd_swarm
from ._common import run_main

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
    return run_main("vigo", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
