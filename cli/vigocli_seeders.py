"""``vigocli swarm seeders list|add|remove``: which envoys may publish seed-dir sidecars."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from ._common import EXIT_OK, add_group, add_verb, emit_json, emit_table
from .vigocli_admin import client_for, when

DESCRIPTION = """\
A seeder is an envoy whose agent.yaml lists seed_dirs. A file NAME with a sidecar
NAME.swarm beside it (YAML: `target:` a path or a list of paths, `retention:` as for
`filecast distribute`) is distributed like an upload: the seeder checks the pair, hashes
the file and asks the server, which checks it again and signs the records itself. The
server accepts this only from the envoys listed here. A seeder is an envoy UUID: an
envoy that enrolls again gets a new UUID and must be added again. Removing a seeder
keeps the records it published (revoke them with `filecast revoke`)."""

EPILOG = """\
exit status:
  0  success
  1  failed (e.g. no such envoy, not a seeder), reason on stderr
  3  the server could not be reached
  4  the server refused the admin token

examples:
  vigocli swarm seeders add seed01
  vigocli swarm seeders list
  vigocli swarm seeders remove 0b7c5d1e-…"""


def register(systems: Any, common: argparse.ArgumentParser) -> None:
    group = add_group(
        systems, "seeders", "the envoys allowed to publish seed-dir sidecars", DESCRIPTION, EPILOG
    )
    verbs = group.add_subparsers(dest="seeders_verb", metavar="VERB", required=True)
    for name, short, long, func in (
        ("list", "list the seeders", "List the envoys allowed to publish sidecars.", list_seeders),
        (
            "add",
            "allow an envoy to publish sidecars",
            "Allow an active envoy, by hostname or UUID, to publish the NAME + NAME.swarm "
            "pairs of its seed directories. Adding a seeder twice changes nothing.",
            add_seeder,
        ),
        (
            "remove",
            "stop an envoy publishing sidecars",
            "Stop an envoy, by hostname or UUID, from publishing sidecars. What it already "
            "published stays until revoked.",
            remove_seeder,
        ),
    ):
        p = add_verb(verbs, common, name, short, long, EPILOG)
        if name != "list":
            p.add_argument("envoy", metavar="HOSTNAME|UUID")
        p.set_defaults(func=func)


def list_seeders(args: argparse.Namespace) -> int:
    seeders: list[dict[str, Any]] = client_for(args).call("GET", "/swarm/seeders")["seeders"]
    if args.json:
        emit_json({"seeders": seeders})
    elif not seeders:
        sys.stdout.write("no seeders (add one: vigocli swarm seeders add HOSTNAME)\n")
    else:
        rows = [[s["uuid"], s["hostname"] or "?", s["state"], when(s["added_at"])] for s in seeders]
        emit_table(rows, ["UUID", "HOSTNAME", "STATE", "ADDED"])
    return EXIT_OK


def add_seeder(args: argparse.Namespace) -> int:
    answer = client_for(args).call("POST", "/swarm/seeders", {"envoy": args.envoy})
    if args.json:
        emit_json(answer)
    else:
        how = "is now a seeder" if answer["added"] else "was already a seeder"
        sys.stdout.write(f"{answer['hostname']} ({answer['uuid']}) {how}\n")
    return EXIT_OK


def remove_seeder(args: argparse.Namespace) -> int:
    answer = client_for(args).call("DELETE", f"/swarm/seeders/{quote(args.envoy, safe='')}")
    if args.json:
        emit_json(answer)
    else:
        sys.stdout.write(
            f"{answer['hostname']} ({answer['uuid']}) is no longer a seeder; what it "
            "published stays until revoked\n"
        )
    return EXIT_OK
