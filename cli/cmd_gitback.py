"""``vigo swarm gitback list|restore``: the git mirrors this envoy holds, and getting a
repository back from one. Both ask the daemon, which knows you by your uid."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from ._common import EXIT_OK, emit_json, emit_table

GITBACK_HELP = """\
gitback mirrors the git repositories in your ~/gitback/<project>/ (each with a
.gitback.yaml) to bare repositories on the peer envoys your operator allows. `list`
shows the mirrors this envoy holds of your repositories (root: everyone's) and what it
publishes of them; `restore` makes a working repository from a mirror, with every
branch and tag, as you."""

LIST_HELP = """\
The mirrors this envoy holds — seeder, project, the last bundle applied (seq) and any
problem — and the repositories it publishes as a seeder. A person sees their own;
root sees everyone's."""

RESTORE_HELP = """\
Make DEST (a new directory) a working repository with every branch and tag of the
mirror of PROJECT from SEEDER (a hostname or UUID, as `list` shows it), checked out at
the mirror's HEAD branch. It runs as you: you need to be able to create DEST. Root may
restore for another person with --user, and may also `git clone` the mirror path that
`list` shows. Hooks never run."""


def register(swarm_verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .cmd_swarm import add_daemon_verb

    gitback = swarm_verbs.add_parser(
        "gitback",
        help="mirrors of your git repositories on peer envoys",
        description=GITBACK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = gitback.add_subparsers(dest="gitback_verb", metavar="VERB", required=True)
    listing = add_daemon_verb(
        verbs, "list", "the mirrors held here and what is published", LIST_HELP
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_list)
    rest = add_daemon_verb(verbs, "restore", "a working repository from a mirror", RESTORE_HELP)
    rest.add_argument("seeder", metavar="SEEDER", help="hostname or UUID of the seeder")
    rest.add_argument("project", metavar="PROJECT")
    rest.add_argument("dest", metavar="DEST", type=Path, help="a directory to create")
    rest.add_argument("--user", metavar="LOGIN", help="(root) restore another person's")
    rest.add_argument("--json", action="store_true", help="machine-readable output")
    rest.set_defaults(func=cmd_restore)


def _when(unix: float | None) -> str:
    if not unix:
        return "-"
    return dt.datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args: argparse.Namespace) -> int:
    from .cmd_swarm import ask

    answer: dict[str, Any] = ask(args, "gitback.list")
    if args.json:
        emit_json(answer)
        return EXIT_OK
    allowed = "allowed" if answer["allowed"] else "not allowed (mirrors nothing, publishes nothing)"
    sys.stdout.write(f"this envoy: {allowed}\n")
    rows = [
        [m["seeder_hostname"] or m["seeder"], m["person"], m["project"], str(m["seq"]),
         _when(m["applied_unix"]), m["problem"][:60]]
        for m in answer["mirrors"]
    ]  # fmt: skip
    if rows:
        emit_table(rows, ["SEEDER", "PERSON", "PROJECT", "SEQ", "APPLIED", "PROBLEM"])
    else:
        sys.stdout.write("no mirrors here\n")
    for p in answer["published"]:
        line = f"publishing {p['person']}/{p['project']}: seq {p['seq']}, {p['refs']} refs"
        sys.stdout.write(line + (f"; problem: {p['problem']}" if p["problem"] else "") + "\n")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from .cmd_swarm import ask

    op_args: dict[str, Any] = {
        "seeder": args.seeder,
        "project": args.project,
        "dest": os.path.abspath(args.dest),
    }
    if args.user:
        op_args["user"] = args.user
    answer = ask(args, "gitback.restore", op_args)
    if args.json:
        emit_json(answer)
    else:
        sys.stdout.write(
            f"restored {args.project} (seq {answer['seq']}) into {answer['dest']}"
            + (f", on {answer['head'].removeprefix('refs/heads/')}" if answer["head"] else "")
            + "\n"
        )
    return EXIT_OK
