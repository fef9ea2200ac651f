"""``vigo swarm puddle …`` — a person's puddle: one identity across their envoys.

Every verb talks to the local daemon over its control socket, which knows you by your
uid; no verb can touch another person's puddle. The passphrase is read here (terminal
without echo, or ``--passphrase-fd``) and never leaves this process: the key is
unwrapped or rewrapped here and only the key (unlock) or the new wrapping (init,
rotate-passphrase) is handed to the daemon.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from ._common import EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, CLIError, emit_json, emit_table
from ._passphrase import PassphraseSource

PUDDLE_HELP = """\
A puddle is your envoys treated as one trust unit: one Ed25519 key, wrapped under
your passphrase (Argon2id + XChaCha20-Poly1305) in ~/.vigo-puddle/ on every member.
Start with `init` on one envoy, `pair` there, `join` on the next, then `unlock` where
you want the key available. Exit codes: 0 ok, 1 failed, 2 usage, 3 daemon not
running, 4 refused (wrong passphrase, wrong or expired code, not permitted)."""

VERBS: dict[str, tuple[str, str]] = {
    "init": (
        "create your puddle on this envoy",
        """\
Create your puddle here: a new Ed25519 key, wrapped under a passphrase you choose
(asked twice on the terminal, or one line from --passphrase-fd), stored in
~/.vigo-puddle/ (directory 0700, files 0600). The member list starts with this envoy
and is signed by the new key. The puddle is unlocked afterwards (--no-unlock to leave
it locked). Refused if you already have a puddle on this envoy.""",
    ),
    "pair": (
        "issue a pairing code for another envoy to join",
        """\
Issue a pairing code NNNN-NNNN for one of your other envoys to join this puddle.
Your puddle must be unlocked here. The code is valid for 5 minutes and for one join;
5 wrong codes sent to this envoy cancel it (issue a new one). Type it on the other
envoy: `vigo swarm puddle join <this envoy> <code>`. The code is never logged.""",
    ),
    "join": (
        "join a puddle with a code from an envoy that is in it",
        """\
Join the puddle of ENVOY (a confirmed peer's hostname or UUID, see `vigo swarm peers`)
with the CODE it showed. The daemon sends the code over the swarm's mutual-TLS peer
channel and receives the *wrapped* identity and the signed member list, now including
this envoy. Your passphrase is not needed and never leaves this machine; run `unlock`
afterwards to use the key here.""",
    ),
    "unlock": (
        "unlock your puddle on this envoy",
        """\
Ask for your passphrase, unwrap your puddle key here, and hand the key to the local
daemon, which holds it in memory for you only until `lock`, a restart, or
--idle-timeout-s seconds without use (default 0: no idle timeout).""",
    ),
    "lock": (
        "forget your unlocked key on this envoy",
        "Make the daemon forget your unlocked key (and cancel any open pairing code).",
    ),
    "pubkey": (
        "show your puddle's public key",
        """\
Print your puddle's public key as an `ssh-ed25519 …` line, the form age (and lockbox)
accept as a recipient. --json adds the raw Ed25519 and X25519 keys in hex.""",
    ),
    "members": (
        "list the envoys in your puddle (signed list)",
        """\
List the envoys in your puddle from the member list signed by the puddle key (the
signature is checked before anything is shown), with the list's version.""",
    ),
    "rotate-passphrase": (
        "change your passphrase on every member",
        """\
Change the passphrase: asks for the current one, then the new one (twice on the
terminal; with --passphrase-fd, two lines: current, new). The same key is rewrapped
under the new passphrase with a higher wrap version and signed by the key; every
member fetches the newer wrapping from its peers, so the old passphrase stops working
everywhere once they have synced.""",
    ),
    "status": (
        "locked or unlocked, members, open pairing, lockbox",
        """\
Show whether your puddle is locked or unlocked on this envoy (and when it locks by
idle timeout), its public key, wrap version, members, any open pairing code's
state (never the code itself), and your lockbox: files, conflict copies, ciphertext
held or missing, files waiting to be decrypted, and the last error.""",
    ),
    "export-identity": (
        "write your private key for recovery without Vigo (dangerous)",
        """\
Write your puddle's PRIVATE key to --output (created 0600; refused if it exists) in
OpenSSH format, which the `age` CLI accepts: `age -d -i FILE secret.age`. Anyone with
that file can read everything encrypted to your puddle, forever. Your puddle must be
unlocked on this envoy, and the passphrase is asked again.""",
    ),
}

READ_VERBS = {"pair", "join", "pubkey", "members", "status"}
PASSPHRASE_VERBS = {"init", "unlock", "rotate-passphrase", "export-identity"}


def register(swarm_verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .cmd_swarm import add_daemon_verb

    puddle = swarm_verbs.add_parser(
        "puddle",
        help="your puddle: one identity across your envoys",
        description=PUDDLE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = puddle.add_subparsers(dest="puddle_verb", metavar="VERB", required=True)
    for name, (short, text) in VERBS.items():
        p = add_daemon_verb(verbs, name, short, text)
        if name in READ_VERBS:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name in PASSPHRASE_VERBS:
            p.add_argument(
                "--passphrase-fd",
                type=int,
                metavar="N",
                help="read passphrases, one per line, from file descriptor N (0 = stdin) "
                "instead of the terminal",
            )
        if name in ("init", "unlock"):
            p.add_argument(
                "--idle-timeout-s",
                type=float,
                default=0.0,
                metavar="S",
                help="lock again after S seconds without use (default 0: never)",
            )
        p.set_defaults(func=_FUNCS[name])
    verbs.choices["init"].add_argument(
        "--no-unlock", action="store_true", help="leave the new puddle locked"
    )
    join = verbs.choices["join"]
    join.add_argument("envoy", help="hostname or UUID of an envoy already in the puddle")
    join.add_argument("code", help="the pairing code it showed, NNNN-NNNN")
    export = verbs.choices["export-identity"]
    export.add_argument("--format", choices=["openssh"], required=True, help="key format")
    export.add_argument("--output", type=Path, required=True, help="file to create (0600)")


def _ask(args: argparse.Namespace, op: str, op_args: dict[str, Any] | None = None) -> Any:
    from .cmd_swarm import ask

    return ask(args, op, op_args)


def _unwrap(args: argparse.Namespace, source: PassphraseSource, what: str = "passphrase") -> Any:
    """Fetch your wrapped identity from the daemon and open it with the passphrase."""
    from vigo_swarm.puddle import WrongPassphrase, decode_wrapped, unwrap

    stored = _ask(args, "puddle.read")
    wrapped = decode_wrapped(base64.b64decode(stored["identity"]))
    passphrase = source.existing(what)
    try:
        return wrapped, unwrap(wrapped, passphrase)
    except WrongPassphrase as exc:
        raise CLIError("wrong passphrase; nothing changed", EXIT_REFUSED) from exc


def _unlock(args: argparse.Namespace, seed: bytes) -> dict[str, Any]:
    result: dict[str, Any] = _ask(
        args, "puddle.unlock", {"seed": seed.hex(), "idle_timeout_s": args.idle_timeout_s}
    )
    return result


def cmd_init(args: argparse.Namespace) -> int:
    from vigo_swarm.puddle import PuddleKey, sign_members, ssh_public, wrap
    from vigo_swarm.puddle.service import b64

    status = _ask(args, "puddle.status")
    if status["state"] != "none":
        raise CLIError(f"you already have a puddle here ({status['puddle'][:16]}…)", EXIT_FAILURE)
    passphrase = PassphraseSource(args.passphrase_fd).new("new passphrase")
    key = PuddleKey.generate()
    state = {
        "identity": b64(wrap(key, passphrase).raw),
        "members": sign_members(key, 1, [uuid.UUID(status["envoy"])]).to_wire(),
    }
    _ask(args, "puddle.init", {"state": state})
    print(f"puddle created: {ssh_public(key.public)}")
    if not args.no_unlock:
        _unlock(args, key.seed)
        print("unlocked on this envoy; next: `vigo swarm puddle pair` to add another envoy")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace) -> int:
    _, key = _unwrap(args, PassphraseSource(args.passphrase_fd))
    result = _unlock(args, key.seed)
    idle = f" (locks after {args.idle_timeout_s:g} s idle)" if args.idle_timeout_s else ""
    print(f"puddle {result['puddle'][:16]}… unlocked on this envoy{idle}")
    return EXIT_OK


def cmd_lock(args: argparse.Namespace) -> int:
    result = _ask(args, "puddle.lock")
    print("locked" if result["was_unlocked"] else "was not unlocked")
    return EXIT_OK


def cmd_pair(args: argparse.Namespace) -> int:
    result = _ask(args, "puddle.pair")
    if args.json:
        emit_json(result)
        return EXIT_OK
    minutes = result["expires_in_s"] / 60
    print(f"pairing code: {result['code']}   (valid {minutes:g} min, one use)")
    print(f"on the other envoy: vigo swarm puddle join {result['envoy']} {result['code']}")
    return EXIT_OK


def cmd_join(args: argparse.Namespace) -> int:
    from vigo_swarm.puddle import normalize_code

    try:
        code = normalize_code(args.code)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_REFUSED) from exc
    result = _ask(args, "puddle.join", {"envoy": args.envoy, "code": code})
    if args.json:
        emit_json(result)
        return EXIT_OK
    print(f"joined puddle {result['puddle'][:16]}… through {result['issuer']}")
    _print_members(result["members"])
    print("next: `vigo swarm puddle unlock` to use it on this envoy")
    return EXIT_OK


def cmd_pubkey(args: argparse.Namespace) -> int:
    from vigo_swarm.puddle import ssh_public, x25519_public

    public = bytes.fromhex(_ask(args, "puddle.read")["puddle"])
    if args.json:
        emit_json(
            {
                "ed25519": public.hex(),
                "x25519": x25519_public(public).hex(),
                "ssh": ssh_public(public),
            }
        )
    else:
        print(ssh_public(public))
    return EXIT_OK


def _print_members(members: list[dict[str, Any]]) -> None:
    rows = [[m["hostname"] or "?", m["uuid"], "yes" if m["this_envoy"] else ""] for m in members]
    emit_table(rows, ["HOSTNAME", "UUID", "THIS ENVOY"])


def cmd_members(args: argparse.Namespace) -> int:
    result = _ask(args, "puddle.members")
    if args.json:
        emit_json(result)
        return EXIT_OK
    print(f"puddle {result['puddle'][:16]}…, member list version {result['version']} (signed)")
    _print_members(result["members"])
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    st = _ask(args, "puddle.status")
    if st["state"] != "none":
        st["lockbox"] = _ask(args, "lockbox.status")
    if args.json:
        emit_json(st)
        return EXIT_OK
    if st["state"] == "none":
        print("no puddle on this envoy (vigo swarm puddle init | join)")
        return EXIT_OK
    state = st["state"]
    if st.get("locks_in_s") is not None:
        state += f" (locks in {st['locks_in_s']:g} s without use)"
    print(f"{'puddle:':<10}{st['puddle']}")
    print(f"{'state:':<10}{state}")
    print(f"{'wrapping:':<10}version {st['wrap_version']}")
    pairing = st.get("pairing")
    if pairing:
        line = pairing["state"]
        if pairing["state"] == "open":
            line += f", {pairing['expires_in_s']:g} s left"
        print(f"{'pairing:':<10}{line}, {pairing['failures']} wrong codes")
    print(f"members (list version {st['members_version']}):")
    _print_members(st["members"])
    _print_lockbox(st["lockbox"])
    return EXIT_OK


def _print_lockbox(lb: dict[str, Any]) -> None:
    if lb["state"] == "none":
        print(f"{'lockbox:':<10}not started yet (the daemon picks it up within a minute)")
        return
    shown = f"{lb['files']} files"
    if lb["conflicts"]:
        shown += f", {lb['conflicts']} conflict copies"
    if lb["state"] == "locked":
        shown += f" here; {lb['pending_writes']} to decrypt on unlock"
    elif lb["pending_writes"]:
        shown += f"; {lb['pending_writes']} waiting for their ciphertext"
    print(f"{'lockbox:':<10}{shown}")
    print(
        f"{'':<10}ciphertext: {lb['blobs_held']} blobs held, {lb['blobs_missing']} missing; "
        f"{lb['live_records']} live of {lb['records']} records"
    )
    if lb["skipped_local"]:
        print(f"{'':<10}{lb['skipped_local']} entries skipped (links, special or foreign files)")
    if lb["last_error"]:
        print(f"{'':<10}last error: {lb['last_error']}")


def cmd_rotate_passphrase(args: argparse.Namespace) -> int:
    from vigo_swarm.puddle import wrap
    from vigo_swarm.puddle.service import b64

    source = PassphraseSource(args.passphrase_fd)
    wrapped, key = _unwrap(args, source, "current passphrase")
    new = wrap(key, source.new("new passphrase"), wrap_version=wrapped.wrap_version + 1)
    result = _ask(args, "puddle.rotate", {"identity": b64(new.raw)})
    print(f"passphrase changed (wrap version {result['wrap_version']}); members sync it")
    return EXIT_OK


WARNING = """\
WARNING: this writes your puddle's PRIVATE key, unencrypted. Anyone who gets this file
can decrypt everything ever encrypted to your puddle, on any machine, forever. Keep it
offline (a USB stick in a drawer), never sync or mail it, and delete it when done."""


def cmd_export_identity(args: argparse.Namespace) -> int:
    status = _ask(args, "puddle.status")
    if status["state"] != "unlocked":
        raise CLIError("unlock your puddle on this envoy first", EXIT_REFUSED)
    print(WARNING, file=sys.stderr)
    _, key = _unwrap(args, PassphraseSource(args.passphrase_fd))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(args.output, flags, 0o600)
    except FileExistsError as exc:
        raise CLIError(f"{args.output} exists; refusing to overwrite it", EXIT_FAILURE) from exc
    except OSError as exc:
        raise CLIError(f"cannot create {args.output}: {exc.strerror}", EXIT_FAILURE) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(key.openssh_private())
    print(f"wrote {args.output} (0600); decrypt with: age -d -i {args.output} FILE.age")
    return EXIT_OK


_FUNCS = {
    "init": cmd_init,
    "pair": cmd_pair,
    "join": cmd_join,
    "unlock": cmd_unlock,
    "lock": cmd_lock,
    "pubkey": cmd_pubkey,
    "members": cmd_members,
    "rotate-passphrase": cmd_rotate_passphrase,
    "status": cmd_status,
    "export-identity": cmd_export_identity,
}
