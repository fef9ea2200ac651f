"""``vigocli swarm gitback show|users list|users set``: who takes part in gitback."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from ._common import EXIT_OK, add_group, add_verb, emit_json, emit_table
from .vigocli_admin import client_for, when

DESCRIPTION = """\
gitback mirrors people's git repositories (~/gitback/<project>/ with a .gitback.yaml)
as bundles to bare repositories on peer envoys. It is denied by default, twice over:
- envoys: server.yaml `swarm: {gitback: {enabled: [patterns]}}` lists hostname
  patterns (shell globs); the first that matches decides, a leading `-` denies, and a
  hostname no pattern matches is denied. The same list says which envoys may publish
  and which may hold mirrors (edit server.yaml and restart the server to change it);
- people: only a person whose `gitback` flag is true here is mirrored.
Envoys learn both at their next check-in."""

EPILOG = """\
exit status:
  0  success
  1  failed, reason on stderr
  2  bad arguments (e.g. not a login name)
  3  the server could not be reached
  4  the server refused the admin token

examples:
  vigocli swarm gitback show
  vigocli swarm gitback users set carol true
  vigocli swarm gitback users list --json"""


def register(systems: Any, common: argparse.ArgumentParser) -> None:
    group = add_group(
        systems, "gitback", "git mirrors: host patterns and people opted in", DESCRIPTION, EPILOG
    )
    verbs = group.add_subparsers(dest="gitback_verb", metavar="VERB", required=True)
    show = add_verb(
        verbs,
        common,
        "show",
        "the host patterns, which envoys they allow, people opted in",
        "Show swarm.gitback.enabled from server.yaml, each active envoy and whether the "
        "patterns allow it, and the people opted in.",
        EPILOG,
    )
    show.set_defaults(func=show_policy)
    users = add_group(verbs, "users", "people's gitback flags", DESCRIPTION, EPILOG)
    user_verbs = users.add_subparsers(dest="users_verb", metavar="VERB", required=True)
    listing = add_verb(
        user_verbs, common, "list", "every person with a flag", "List people's flags.", EPILOG
    )
    listing.set_defaults(func=list_users)
    setter = add_verb(
        user_verbs,
        common,
        "set",
        "opt a person in (true) or out (false)",
        "Set a person's gitback flag (by login name). Envoys learn it at their next "
        "check-in; opting out stops new bundles, mirrors already made stay.",
        EPILOG,
    )
    setter.add_argument("name", metavar="LOGIN")
    setter.add_argument("value", choices=["true", "false"])
    setter.set_defaults(func=set_user)


def show_policy(args: argparse.Namespace) -> int:
    answer = client_for(args).call("GET", "/swarm/gitback")
    if args.json:
        emit_json(answer)
        return EXIT_OK
    patterns = " ".join(answer["enabled"]) or "(none: every envoy is denied)"
    sys.stdout.write(f"patterns:  {patterns}\n")
    sys.stdout.write(f"people:    {' '.join(answer['users']) or '(none opted in)'}\n")
    rows = [[e["hostname"], e["uuid"], "yes" if e["allowed"] else "no"] for e in answer["envoys"]]
    emit_table(rows, ["HOSTNAME", "UUID", "ALLOWED"])
    return EXIT_OK


def list_users(args: argparse.Namespace) -> int:
    users: list[dict[str, Any]] = client_for(args).call("GET", "/swarm/gitback/users")["users"]
    if args.json:
        emit_json({"users": users})
    elif not users:
        sys.stdout.write("nobody has a gitback flag (vigocli swarm gitback users set NAME true)\n")
    else:
        rows = [[u["name"], str(u["gitback"]).lower(), when(u["updated_at"])] for u in users]
        emit_table(rows, ["LOGIN", "GITBACK", "CHANGED"])
    return EXIT_OK


def set_user(args: argparse.Namespace) -> int:
    body = {"gitback": args.value == "true"}
    answer = client_for(args).call("PUT", f"/swarm/gitback/users/{quote(args.name, safe='')}", body)
    if args.json:
        emit_json(answer)
    else:
        state = "opted in" if answer["gitback"] else "opted out"
        how = "" if answer["changed"] else " (unchanged)"
        sys.stdout.write(f"{answer['name']} is {state}{how}\n")
    return EXIT_OK
