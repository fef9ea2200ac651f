"""``vigo swarm status|peers|checkin`` — ask the running daemon over its control socket;
``vigo swarm puddle …`` lives in cmd_puddle.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, CLIError, emit_json, emit_table
from .cmd_agent import add_state_dir, state_dir_of

STATUS_HELP = """\
Show this envoy's swarm state: identity, peer channel port, advertised addresses,
confirmed peers and candidates, multicast and check-in statistics, each filecast blob's
progress and sources, and on a seeder each seed-dir sidecar (published, or its error)."""

CHECKIN_HELP = """\
Ask the daemon to check in with the server lite now (root only): peer hints and the
revocation list are refreshed without waiting for the next interval."""

PEERS_HELP = """\
List the envoys this daemon has confirmed as peers: each was hinted by multicast or by
the server, then dialled over mutual TLS, and its certificate named the hinted UUID.
--all also lists candidates (hinted, not or not yet confirmed) with their last error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    swarm = sub.add_parser("swarm", help="the swarm as this envoy sees it")
    verbs = swarm.add_subparsers(dest="swarm_verb", metavar="VERB", required=True)
    for name, short, helptext, func in (
        ("status", "this envoy's identity, peers and statistics", STATUS_HELP, cmd_status),
        ("peers", "the confirmed peers (--all: and candidates)", PEERS_HELP, cmd_peers),
        ("checkin", "check in with the server now (root)", CHECKIN_HELP, cmd_checkin),
    ):
        p = add_daemon_verb(verbs, name, short, helptext)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        if name == "peers":
            p.add_argument("--all", action="store_true", help="include unconfirmed candidates")
    from . import cmd_puddle

    cmd_puddle.register(verbs)
    from . import cmd_longdrawer

    cmd_longdrawer.register(verbs)


def add_daemon_verb(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, short: str, text: str
) -> argparse.ArgumentParser:
    """A verb that asks the daemon: its help, --state-dir and --socket."""
    p = verbs.add_parser(
        name, help=short, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_state_dir(p)
    p.add_argument("--socket", type=Path, help="control socket (default STATE_DIR/control.sock)")
    return p


def ask(args: argparse.Namespace, op: str, op_args: dict[str, Any] | None = None) -> Any:
    from vigo_agent.control import ControlError, call
    from vigo_agent.paths import StatePaths

    path = args.socket or StatePaths(state_dir_of(args)).control_socket
    try:
        return call(path, op, op_args)
    except ControlError as exc:
        code = EXIT_UNREACHABLE if exc.code in ("not_running", "timeout") else EXIT_REFUSED
        hint = " (is `vigo agent run` running?)" if exc.code == "not_running" else ""
        raise CLIError(f"{exc.message}{hint}", code) from exc


def cmd_status(args: argparse.Namespace) -> int:
    status = ask(args, "status")
    if args.json:
        emit_json(status)
        return EXIT_OK
    ck = status.get("checkin", {})
    lines = [
        ("envoy", f"{status['hostname']} ({status['uuid']})"),
        ("peer channel", f"port {status['port']}, advertising {', '.join(status['advertise'])}"),
        ("peers", f"{status['peers_confirmed']} confirmed, {status['candidates']} candidates"),
        ("server", status["server_url"]),
        (
            "check-in",
            f"{ck.get('ok', 0)} ok, {ck.get('failed', 0)} failed"
            + (f"; last error: {ck['last_error']}" if ck.get("last_error") else ""),
        ),
        ("revoked certs", str(status["revoked_serials"])),
        ("uptime", f"{status['uptime_s']} s"),
        ("you", f"uid {status['caller']['uid']}"),
    ]
    for key, value in lines:
        print(f"{key + ':':<15}{value}")
    for blob in status.get("filecast", []):
        done, total = blob["have_chunks"], blob["total_chunks"]
        sources = ", ".join(f"{peer[:8]}:{n}" for peer, n in blob["sources"].items())
        line = f"{blob['blob'][:12]}  {blob['state']:<12} {done}/{total} chunks"
        line += f"  -> {', '.join(blob['targets'])}"
        if sources:
            line += f"  from {sources}"
        if blob["error"]:
            line += f"  error: {blob['error']}"
        print(f"{'filecast:':<15}{line}")
    for line in sidecar_lines(status.get("sidecars", [])):
        print(f"{'sidecar:':<15}{line}")
    return EXIT_OK


def sidecar_lines(items: list[dict[str, Any]]) -> list[str]:
    """Pure: one line per seed-dir sidecar (a seeder's ``sidecars`` status)."""
    lines = []
    for s in items:
        line = f"{s['sidecar']}  {s['state']}"
        if s.get("targets"):
            line += f"  -> {', '.join(s['targets'])}"
        if s.get("blob"):
            line += f"  blob {s['blob'][:12]}"
        others = {t: c for t, c in (s.get("current") or {}).items() if c != "live"}
        if others:
            line += "  (on the server: " + ", ".join(f"{t} {c}" for t, c in others.items()) + ")"
        if s.get("error"):
            line += f"  error: {s['error']}"
        lines.append(line)
    return lines


def cmd_peers(args: argparse.Namespace) -> int:
    peers = ask(args, "peers", {"all": bool(args.all)})
    if args.json:
        emit_json(peers)
        return EXIT_OK
    rows = [
        [
            p["hostname"] or "?",
            p["uuid"],
            p["address"] or ",".join(p["addresses"]),
            "yes" if p["confirmed"] else "no",
            "+".join(p["sources"]),
            p["last_error"][:40],
        ]
        for p in peers
    ]
    emit_table(rows, ["HOSTNAME", "UUID", "ADDRESS", "CONFIRMED", "SOURCE", "LAST ERROR"])
    return EXIT_OK


def cmd_checkin(args: argparse.Namespace) -> int:
    result = ask(args, "checkin")
    if args.json:
        emit_json(result)
    else:
        print("check-in triggered")
    return EXIT_OK
