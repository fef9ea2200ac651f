"""``vigo swarm longdrawer status`` — your ~/longdrawer/ as the daemon syncs it."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import EXIT_OK, emit_json

STATUS_HELP = """\
Show your ~/longdrawer/ as this envoy syncs it: the envoys that hold your folder too
(partners, confirmed over mutual TLS), whether everything is in sync or what is still
pending (files and bytes), conflicts kept as *.sync-conflict-* copies, and the last
error. You see only your own folder (the daemon knows you by your uid); root sees
everyone's. Needs `longdrawer_enabled: true` in the daemon's agent.yaml."""


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ld = verbs.add_parser("longdrawer", help="your ~/longdrawer/ kept in sync across envoys")
    sub = ld.add_subparsers(dest="longdrawer_verb", metavar="VERB", required=True)
    from .cmd_swarm import add_daemon_verb

    p = add_daemon_verb(
        sub, "status", "partners, pending files and bytes, conflicts, last error", STATUS_HELP
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)


def render(people: list[dict[str, Any]]) -> list[str]:
    """Pure: the status answer as lines for a person to read."""
    if not people:
        return ["no ~/longdrawer/ folder is synced here for you (create ~/longdrawer/)"]
    lines = []
    for p in people:
        state = (
            "in sync"
            if p["in_sync"]
            else f"pending: {p['pending_files']} files, {p['pending_bytes']} bytes"
        )
        idx = p["index"]
        lines.append(f"{p['person']}: {p['folder']}  ({state})")
        lines.append(
            f"  index: {idx['files']} files, {idx['dirs']} dirs, {idx['symlinks']} symlinks, "
            f"{idx['bytes']} bytes; seq {p['seq']}"
        )
        lines.append(f"  conflicts: {p['conflicts']}; fetched {p['bytes_fetched']} bytes")
        if not p["peers"]:
            lines.append("  peers: none yet (no other envoy holds your folder)")
        for peer in p["peers"]:
            sync = "in sync" if peer["in_sync"] else f"behind (their seq {peer['their_seq']})"
            err = f"; error: {peer['last_error']}" if peer["last_error"] else ""
            name = peer["hostname"] or peer["uuid"]
            lines.append(f"  peer {name} at {peer['address']} via {peer['via']}: {sync}{err}")
        if p["changing"]:
            lines.append(f"  changing (indexed when quiet): {', '.join(p['changing'])}")
        if p["last_error"]:
            lines.append(f"  last error: {p['last_error']}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from .cmd_swarm import ask

    people = ask(args, "longdrawer_status")
    if args.json:
        emit_json(people)
    else:
        print("\n".join(render(people)))
    return EXIT_OK
