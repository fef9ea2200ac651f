"""``vigocli envoys list|show|revoke``: the enrolled machines."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from ._common import EXIT_OK, add_group, emit_json, emit_table
from .vigocli_admin import client_for, when

DESCRIPTION = """\
Envoys are the enrolled machines. Each has a client UUID (named in its certificate) and a
hostname; the server addresses envoys by UUID, people usually by hostname. States:
active; replaced (the hostname enrolled again: the old certificate is revoked); revoked
(by an admin). Revoked and replaced envoys' certificate serials and UUIDs reach every
envoy at check-in, and peers refuse them."""


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    group = add_group(subparsers, "envoys", "list, show and revoke envoys", DESCRIPTION)
    verbs = group.add_subparsers(dest="envoys_verb", metavar="VERB", required=True)

    lst = verbs.add_parser(
        "list",
        parents=[common],
        help="list envoys",
        description="List every envoy the server knows, in every state.",
    )
    lst.set_defaults(func=list_envoys)

    show = verbs.add_parser(
        "show",
        parents=[common],
        help="show one envoy",
        description="Show one envoy by UUID, or the active envoy of a hostname.",
    )
    show.add_argument("envoy", metavar="UUID|HOSTNAME")
    show.set_defaults(func=show_envoy)

    revoke = verbs.add_parser(
        "revoke",
        parents=[common],
        help="revoke an envoy's certificate",
        description="Revoke an envoy by UUID: its certificate serials and UUID go on the "
        "revocation list. Peers refuse it within one check-in interval.",
    )
    revoke.add_argument("envoy_uuid", metavar="UUID")
    revoke.set_defaults(func=revoke_envoy)


def list_envoys(args: argparse.Namespace) -> int:
    envoys: list[dict[str, Any]] = client_for(args).call("GET", "/envoys")["envoys"]
    if args.json:
        emit_json(envoys)
        return EXIT_OK
    rows = [
        [
            e["uuid"],
            e["hostname"],
            e["state"],
            when(e["enrolled_at"]),
            when(e["last_checkin"]),
            ",".join(e["addresses"]) or "-",
            str(e["port"] or "-"),
        ]
        for e in envoys
    ]
    emit_table(
        rows, ["UUID", "HOSTNAME", "STATE", "ENROLLED", "LAST CHECK-IN", "ADDRESSES", "PORT"]
    )
    return EXIT_OK


def _print_envoy(envoy: dict[str, Any]) -> None:
    lines = [
        ("uuid", envoy["uuid"]),
        ("hostname", envoy["hostname"]),
        ("state", envoy["state"]),
        ("enrolled", when(envoy["enrolled_at"])),
        ("last check-in", when(envoy["last_checkin"])),
        ("addresses", ", ".join(envoy["addresses"]) or "-"),
        ("port", str(envoy["port"] or "-")),
        ("serials", ", ".join(envoy["serials"]) or "-"),
        ("revoked serials", ", ".join(envoy["revoked_serials"]) or "-"),
    ]
    if envoy.get("replaced_by"):
        lines.append(("replaced by", envoy["replaced_by"]))
    for key, value in lines:
        sys.stdout.write(f"{key + ':':<17}{value}\n")


def show_envoy(args: argparse.Namespace) -> int:
    envoy = client_for(args).call("GET", f"/envoys/{quote(args.envoy, safe='')}")
    if args.json:
        emit_json(envoy)
    else:
        _print_envoy(envoy)
    return EXIT_OK


def revoke_envoy(args: argparse.Namespace) -> int:
    envoy = client_for(args).call("POST", f"/envoys/{quote(args.envoy_uuid, safe='')}/revoke")
    if args.json:
        emit_json(envoy)
    else:
        sys.stdout.write(
            f"{envoy['hostname']} ({envoy['uuid']}) is {envoy['state']}; revoked "
            f"serials: {', '.join(envoy['revoked_serials']) or '-'}\n"
        )
    return EXIT_OK
