"""``vigo agent run`` — run the envoy daemon in the foreground (systemd runs it so)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._common import EXIT_NOT_ENROLLED, EXIT_OK, EXIT_USAGE, CLIError

HELP = """\
Run the envoy daemon in the foreground until SIGTERM or SIGINT.

The daemon serves the swarm peer channel (mutual TLS on TCP 1531), announces itself
and listens on UDP multicast 224.0.0.42:1531, checks in with the server lite for peer
hints and revocations, and answers the CLI on its control socket. Settings come from
STATE_DIR/agent.yaml (see docs/operator.md); the identity from `vigo enroll`."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="the envoy daemon")
    verbs = agent.add_subparsers(dest="agent_verb", metavar="VERB", required=True)
    run = verbs.add_parser(
        "run",
        help="run the daemon in the foreground",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_state_dir(run)
    run.add_argument("--config", type=Path, help="config file (default STATE_DIR/agent.yaml)")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override agent.yaml's log_level",
    )
    run.set_defaults(func=cmd_run)


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    from vigo_agent.paths import default_state_dir

    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"the envoy's state dir (default $VIGO_STATE_DIR or {default_state_dir()})",
    )


def state_dir_of(args: argparse.Namespace) -> Path:
    from vigo_agent.paths import default_state_dir

    return Path(args.state_dir) if args.state_dir else default_state_dir()


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from vigo_agent.config import ConfigError, load_config
    from vigo_agent.daemon import run_daemon
    from vigo_agent.identity import NotEnrolled, load_identity
    from vigo_agent.paths import StatePaths

    state_dir = state_dir_of(args)
    paths = StatePaths(state_dir)
    try:
        config = load_config(args.config or paths.agent_yaml)
        load_identity(paths)
    except ConfigError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from exc
    except NotEnrolled as exc:
        raise CLIError(f"{exc}; run `vigo enroll` first", EXIT_NOT_ENROLLED) from exc
    level = (args.log_level or config.log_level).upper()
    logging.basicConfig(
        level=level, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    trio.run(run_daemon, state_dir, args.config)
    return EXIT_OK
