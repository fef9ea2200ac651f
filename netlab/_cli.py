"""``python -m netlab``: stand up, inspect, enter and remove labs; run the demo.

One function per verb, all writing to an injected ``out`` stream so tests can read what
a user would see. Errors are ``NetlabError`` messages, never tracebacks. Exit status:
0 success, 1 failure, 2 usage error or not root, 130 interrupted; ``exec`` returns the
command's own status.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import _commands as cmd
from ._demo import DemoRun, run_demo
from ._errors import NetlabError, NotRoot, require_root
from ._lab import Lab
from ._proc import is_alive
from ._state import RUN_DIR, LabRecord, read_records
from ._topology import MAX_ENVOYS
from .fleet import Fleet

PROG = "python -m netlab"

DESCRIPTION = f"""\
netlab runs many Vigo hosts on one machine. Each host is a Linux network namespace
whose eth0 is plugged into a bridge that lives in a namespace of its own, on the
private network 10.77.0.0/24 (server 10.77.0.2, envoyK 10.77.0.(10+K)); the machine's
own network is never touched. Multicast crosses the bridge, so discovery works as on a
LAN. Every command except 'list' needs root.

Labs are recorded in {RUN_DIR}/<labid>.json. A lab made by 'up' stays until 'down';
a lab made by a program (a test) is removed when that program ends, and if it crashed,
by the next program that creates a lab.
"""

EPILOG = """\
examples:
  python -m netlab demo                      # the main job: 3 envoys find each other
  python -m netlab up --envoys 4 --rate-mbit 100
  python -m netlab exec envoy1 -- vigo swarm peers --state-dir /tmp/vgl-ID/envoy1
  python -m netlab exec envoy2 -- ip addr
  python -m netlab list
  python -m netlab down                      # every lab, plus any debris
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _envoy_count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_ENVOYS:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_ENVOYS}: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    up = verbs.add_parser(
        "up",
        help="create a lab with a running server and envoys, and leave it running",
        formatter_class=fmt,
        description=textwrap.dedent("""\
            Create a lab, start the server lite in host 'server', enroll N envoys with
            one join token, start their daemons and wait until each answers on its
            control socket. Prints every host (name, address, namespace, state dir,
            log file), the server URL and the admin token file, then exits leaving
            the lab running (it is recorded as detached: only 'down' removes it)."""),
    )
    up.add_argument(
        "--envoys",
        type=_envoy_count,
        default=3,
        metavar="N",
        help="number of envoy hosts (default: 3)",
    )
    up.add_argument(
        "--rate-mbit",
        type=_positive_float,
        metavar="R",
        help="limit every host to R Mbit/s in each direction (tc tbf)",
    )
    up.add_argument(
        "--agent-config",
        type=Path,
        metavar="FILE",
        help="YAML mapping written as every envoy's agent.yaml",
    )
    up.add_argument(
        "--bare", action="store_true", help="only the namespaces: start no server and no envoys"
    )
    up.add_argument(
        "--timeout-s",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="give up on a start-up step after S seconds (default: 60)",
    )
    up.add_argument("--json", action="store_true", help="print the lab as JSON")

    ex = verbs.add_parser(
        "exec",
        help="run a command inside a host's namespace",
        formatter_class=fmt,
        description="Run CMD inside HOST's network namespace with this terminal; exits "
        "with CMD's status. The lab is found in the run dir (--lab when several).",
    )
    ex.add_argument("host", metavar="HOST", help="host name: server, envoy1, envoy2, …")
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD…")
    ex.add_argument("--lab", metavar="ID", help="lab id (needed when several labs run)")

    ls = verbs.add_parser("list", help="list labs and whether their owner is alive")
    ls.add_argument("--json", action="store_true", help="print JSON")

    down = verbs.add_parser(
        "down",
        help="remove labs: processes, namespaces, state files, root dirs",
        description="Kill every process in the labs' namespaces and delete them, their "
        "state files and (unless --keep-files) their root dirs. Without --lab: every "
        "lab, including ones other programs are using, and orphan vgl-* namespaces.",
    )
    down.add_argument("--lab", metavar="ID", help="remove only this lab")
    down.add_argument("--keep-files", action="store_true", help="keep the root dir (logs)")

    demo = verbs.add_parser(
        "demo",
        help="the demo: a server and envoys find each other over multicast and mTLS",
        description="Bring up a lab (needs root), start the server lite, enroll the "
        "envoys, start their daemons, wait until each lists every other one as an "
        "mTLS-confirmed peer, print a summary, and tear everything down (also on "
        "Ctrl-C or failure). Exit status 0 on success.",
    )
    demo.add_argument(
        "--envoys", type=_envoy_count, default=3, metavar="N", help="number of envoys (default: 3)"
    )
    demo.add_argument(
        "--rate-mbit", type=_positive_float, metavar="R", help="rate limit per host, Mbit/s"
    )
    demo.add_argument(
        "--timeout-s",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="give up on a step after S seconds (default: 60)",
    )
    return parser


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    require_root("netlab up")
    config: dict[str, Any] = {}
    if args.agent_config is not None:
        try:
            loaded = yaml.safe_load(args.agent_config.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise NetlabError(f"--agent-config {args.agent_config}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise NetlabError(f"--agent-config {args.agent_config}: not a YAML mapping")
        config = loaded
    lab = Lab.create(args.envoys, rate_mbit=args.rate_mbit, with_server=not args.bare)
    fleet = None
    try:
        if not args.bare:
            fleet = Fleet(lab, agent_config=config)
            fleet.start_server(timeout_s=args.timeout_s)
            if lab.envoys:
                fleet.enroll_all()
                for host in lab.envoys:
                    fleet.start_envoy(host)
                fleet.wait_ready(timeout_s=args.timeout_s)
    except BaseException:
        lab.down(remove_root=False)
        print(f"netlab up: failed; logs kept in {lab.root_dir / 'logs'}", file=out)
        raise
    lab.detach()
    _print_lab(lab, fleet, out, as_json=args.json)
    return 0


def _print_lab(lab: Lab, fleet: Fleet | None, out: TextIO, *, as_json: bool) -> None:
    hosts = [
        {
            "name": h.name,
            "address": h.address,
            "namespace": h.namespace,
            "state_dir": str(h.state_dir),
            "log_file": str(h.log_file),
        }
        for h in lab.hosts
    ]
    info: dict[str, Any] = {"lab": lab.id, "root_dir": str(lab.root_dir), "hosts": hosts}
    if fleet is not None:
        info["server_url"] = fleet.server_url
        info["admin_token_file"] = str(fleet.admin_token_file)
        info["ca_file"] = str(fleet.ca_file)
    if as_json:
        json.dump(info, out, indent=2)
        print(file=out)
        return
    print(f"lab {lab.id} is up (remove it with: {PROG} down --lab {lab.id})", file=out)
    if fleet is not None:
        print(f"server URL        {fleet.server_url}", file=out)
        print(f"admin token file  {fleet.admin_token_file}", file=out)
        print(f"CA file           {fleet.ca_file}", file=out)
    columns = ["name", "address", "namespace", "state_dir", "log_file"]
    rows = [[c.upper().replace("_", " ") for c in columns]] + [
        [h[c] for c in columns] for h in hosts
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def cmd_exec(args: argparse.Namespace, out: TextIO) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise NetlabError("exec: no command given (usage: exec HOST -- CMD…)")
    require_root("netlab exec")
    lab = Lab.attach(args.lab)
    host = lab.host(args.host)
    try:
        return subprocess.run(cmd.netns_exec(host.namespace, command), check=False).returncode
    except OSError as exc:
        raise NetlabError(f"exec: {exc}") from exc


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    labs: list[dict[str, Any]] = []
    for record in read_records(RUN_DIR):
        if not isinstance(record, LabRecord):
            labs.append({"lab": record.lab_id, "status": f"unreadable: {record.error}"})
            continue
        if record.owner is None:
            status = "detached"
        elif is_alive(record.owner):
            status = f"owned by pid {record.owner.pid}"
        else:
            status = f"stale (owner pid {record.owner.pid} is gone)"
        hosts = [f"{h.name}={h.address}" for h in record.hosts]
        labs.append(
            {
                "lab": record.lab_id,
                "status": status,
                "root_dir": str(record.root_dir),
                "hosts": hosts,
            }
        )
    if args.json:
        json.dump(labs, out, indent=2)
        print(file=out)
        return 0
    if not labs:
        print("no labs", file=out)
    for lab in labs:
        print(f"{lab['lab']}  {lab['status']}  {lab.get('root_dir', '')}".rstrip(), file=out)
        if lab.get("hosts"):
            print(f"    {' '.join(lab['hosts'])}", file=out)
    return 0


def cmd_down(args: argparse.Namespace, out: TextIO) -> int:
    require_root("netlab down")
    remove_root = False if args.keep_files else None
    if args.lab is not None:
        Lab.attach(args.lab).down(remove_root=remove_root)
        print(f"lab {args.lab} removed", file=out)
        return 0
    removed = Lab.down_all()
    print(f"removed {len(removed)} lab(s){': ' if removed else ''}{' '.join(removed)}", file=out)
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    demo = DemoRun(out=out, envoys=args.envoys, timeout_s=args.timeout_s, rate_mbit=args.rate_mbit)
    return run_demo(demo)


VERBS = {"up": cmd_up, "exec": cmd_exec, "list": cmd_list, "down": cmd_down, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return VERBS[args.verb](args, out)
    except NotRoot as exc:
        print(f"{PROG} {args.verb}: {exc}", file=sys.stderr)
        return 2
    except NetlabError as exc:
        print(f"{PROG} {args.verb}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.verb}: interrupted", file=sys.stderr)
        return 130
