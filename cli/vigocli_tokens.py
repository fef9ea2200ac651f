"""``vigocli token create|list|revoke``: join tokens for enrolling envoys."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import EXIT_OK, add_group, emit_json, emit_table
from .vigocli_admin import client_for, when

DESCRIPTION = """\
Join tokens let a host enroll (`vigo enroll --server URL --token TOKEN`). A token reads
vigo1.<id>.<secret>.<ca-sha256>: the id names it in lists, the secret is shown only once
(at creation; the server keeps only a hash), and the CA fingerprint lets the envoy check
it talks to this server before it sends anything. A token stops working when it
expires, when it has been used --max-uses times, or when it is revoked."""


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    group = add_group(subparsers, "token", "create, list and revoke join tokens", DESCRIPTION)
    verbs = group.add_subparsers(dest="token_verb", metavar="VERB", required=True)

    create = verbs.add_parser(
        "create",
        parents=[common],
        help="create a join token (prints the secret once)",
        description="Create a join token. The whole token is printed once; keep it secret "
        "until used. With --json, prints the token object including 'token'.",
    )
    create.add_argument(
        "--ttl-s",
        type=int,
        default=3600,
        metavar="N",
        help="seconds until the token expires (default 3600)",
    )
    create.add_argument(
        "--max-uses",
        type=int,
        default=1,
        metavar="N",
        help="how many enrollments it allows (default 1)",
    )
    create.add_argument(
        "--description", default="", metavar="TEXT", help="a note shown in `token list`"
    )
    create.set_defaults(func=create_token)

    lst = verbs.add_parser(
        "list",
        parents=[common],
        help="list join tokens (never secrets)",
        description="List join tokens with their state: active, expired, "
        "exhausted (all uses taken) or revoked.",
    )
    lst.set_defaults(func=list_tokens)

    revoke = verbs.add_parser(
        "revoke",
        parents=[common],
        help="revoke a join token",
        description="Revoke a join token by id; it can no longer enroll "
        "anyone. Envoys already enrolled are not affected.",
    )
    revoke.add_argument("token_id", metavar="ID", help="the token id (8 hex characters)")
    revoke.set_defaults(func=revoke_token)


def create_token(args: argparse.Namespace) -> int:
    body = {"ttl_s": args.ttl_s, "max_uses": args.max_uses, "description": args.description}
    token = client_for(args).call("POST", "/tokens", body)
    if args.json:
        emit_json(token)
    else:
        sys.stdout.write(f"{token['token']}\n")
        sys.stderr.write(
            f"join token {token['id']}: {token['max_uses']} use(s), expires "
            f"{when(token['expires_at'])}\n"
        )
    return EXIT_OK


def list_tokens(args: argparse.Namespace) -> int:
    tokens: list[dict[str, Any]] = client_for(args).call("GET", "/tokens")["tokens"]
    if args.json:
        emit_json(tokens)
        return EXIT_OK
    rows = [
        [
            t["id"],
            t["state"],
            f"{t['uses']}/{t['max_uses']}",
            when(t["expires_at"]),
            t.get("description") or "",
        ]
        for t in tokens
    ]
    emit_table(rows, ["ID", "STATE", "USES", "EXPIRES", "DESCRIPTION"])
    return EXIT_OK


def revoke_token(args: argparse.Namespace) -> int:
    token = client_for(args).call("DELETE", f"/tokens/{_segment(args.token_id)}")
    if args.json:
        emit_json(token)
    else:
        sys.stdout.write(f"revoked join token {token['id']}\n")
    return EXIT_OK


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
