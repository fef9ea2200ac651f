"""`vigo swarm puddle` against a real daemon: two real local users (isolation through
the control socket), wrong passphrases, rotation, and recovery with the real `age` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from fleet_helpers import FakeEnrolled
from user_helpers import run_as, run_cli_as, temporary_user

from vigo_agent.config import AgentConfig
from vigo_agent.control import ControlError, call
from vigo_agent.daemon import Daemon
from vigo_agent.identity import load_identity

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
ALICE_PASS = b"alice's long passphrase\n"


async def start_daemon(
    envoy: FakeEnrolled,
    nursery: trio.Nursery,
    address: str,
    home_root: str = "",
    lockbox_rescan_s: float = 30.0,
) -> Daemon:
    cfg = AgentConfig(
        listen_address=address,
        port=0,
        multicast_enabled=False,
        advertise_addresses=(address,),
        home_root=home_root,
        lockbox_rescan_s=lockbox_rescan_s,
    )
    daemon = Daemon(envoy.paths, cfg, load_identity(envoy.paths))
    await nursery.start(daemon.run)
    return daemon


@pytest.fixture
def users(shared_dir: Path) -> Iterator[tuple[pwd.struct_passwd, pwd.struct_passwd]]:
    homes = shared_dir / "home"
    homes.mkdir(mode=0o755)
    with (
        temporary_user("vigo-pd-alice", homes / "alice") as alice,
        temporary_user("vigo-pd-bob", homes / "bob") as bob,
    ):
        yield alice, bob


def digest_tree(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


async def test_bob_cannot_unlock_pair_lock_or_read_alices_puddle(
    envoy: FakeEnrolled,
    nursery: trio.Nursery,
    users: tuple[pwd.struct_passwd, pwd.struct_passwd],
) -> None:
    alice, bob = users
    await start_daemon(envoy, nursery, "127.0.0.190")
    sock = ["--socket", str(envoy.paths.control_socket)]

    async def cli(user: pwd.struct_passwd, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        return await trio.to_thread.run_sync(
            run_cli_as, user, ["swarm", "puddle", *argv, *sock], stdin
        )

    async def state_of(user: pwd.struct_passwd) -> dict:
        code, out, err = await cli(user, "status", "--json")
        assert code == 0, err
        return json.loads(out)

    code, out, err = await cli(alice, "init", "--passphrase-fd", "0", stdin=ALICE_PASS)
    assert code == 0, err
    assert "ssh-ed25519 " in out
    pdir = Path(alice.pw_dir) / ".vigo-puddle"
    st = pdir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.pw_uid, 0o700)
    for f in pdir.iterdir():
        fst = f.stat()
        assert (fst.st_uid, fst.st_gid, stat.S_IMODE(fst.st_mode)) == (
            alice.pw_uid,
            alice.pw_gid,
            0o600,
        )
    alice_state = await state_of(alice)
    assert alice_state["state"] == "unlocked"
    before = digest_tree(pdir)

    # bob sees no puddle: nothing of alice's reaches him
    assert (await state_of(bob)) == {"state": "none", "envoy": str(envoy.uuid)}
    for verb in ("members", "pubkey", "pair"):
        code, out, err = await cli(bob, verb)
        assert code == 4 and "no puddle" in err, (verb, code, err)
        assert alice_state["puddle"][:16] not in out + err
    # alice's passphrase does not help bob: his uid has no puddle to unlock
    code, _, err = await cli(bob, "unlock", "--passphrase-fd", "0", stdin=ALICE_PASS)
    assert code == 4 and "no puddle" in err, err
    # bob's lock is about bob only
    code, out, _ = await cli(bob, "lock")
    assert code == 0 and "was not unlocked" in out
    assert (await state_of(alice))["state"] == "unlocked"
    assert (await state_of(alice))["pairing"] is None

    # nor can he read the files themselves
    def read_alices_identity() -> int:
        try:
            (pdir / "identity").read_bytes()
        except PermissionError:
            return 13
        return 0

    assert (await trio.to_thread.run_sync(run_as, bob, read_alices_identity))[0] == 13

    # a link from bob's home to alice's puddle is refused, not followed
    (Path(bob.pw_dir) / ".vigo-puddle").symlink_to(pdir)
    os.lchown(Path(bob.pw_dir) / ".vigo-puddle", bob.pw_uid, bob.pw_gid)
    code, _, err = await cli(bob, "status")
    assert code == 4 and "not a directory" in err, err
    code, _, err = await cli(bob, "pair")
    assert code == 4, err
    (Path(bob.pw_dir) / ".vigo-puddle").unlink()

    # bob's own puddle is his own: his lock leaves alice unlocked
    code, _, err = await cli(bob, "init", "--passphrase-fd", "0", stdin=b"bob's passphrase\n")
    assert code == 0, err
    assert (await state_of(bob))["puddle"] != alice_state["puddle"]
    code, out, _ = await cli(bob, "lock")
    assert "locked" in out
    assert (await state_of(alice))["state"] == "unlocked"
    code, out, err = await cli(alice, "pair", "--json")
    assert code == 0, err
    assert json.loads(out)["code"]
    assert (await state_of(bob))["pairing"] is None
    assert digest_tree(pdir) == before

    # alice's wrong passphrase: a clear error and nothing changes
    await cli(alice, "lock")
    code, _, err = await cli(alice, "unlock", "--passphrase-fd", "0", stdin=b"not it at all\n")
    assert code == 4 and "wrong passphrase" in err and "Traceback" not in err
    assert (await state_of(alice))["state"] == "locked"
    assert digest_tree(pdir) == before
    code, _, err = await cli(alice, "unlock", "--passphrase-fd", "0", stdin=ALICE_PASS)
    assert code == 0, err


@pytest.fixture
async def root_daemon(
    envoy: FakeEnrolled, nursery: trio.Nursery, shared_dir: Path
) -> AsyncIterator[Daemon]:
    yield await start_daemon(envoy, nursery, "127.0.0.191", home_root=str(shared_dir / "homes"))


async def vigo(
    envoy: FakeEnrolled, *argv: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [str(BIN / "vigo"), "swarm", "puddle", *argv, "--state-dir", str(envoy.paths.root)],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def export(
    envoy: FakeEnrolled, out: str, passphrase: bytes
) -> subprocess.CompletedProcess[bytes]:
    argv = ["export-identity", "--format", "openssh", "--output", out, "--passphrase-fd", "0"]
    return await vigo(envoy, *argv, stdin=passphrase)


@pytest.mark.skipif(shutil.which("age") is None, reason="the Debian `age` CLI is needed")
async def test_exported_identity_decrypts_with_the_real_age_cli(
    envoy: FakeEnrolled, root_daemon: Daemon, shared_dir: Path
) -> None:
    import pyrage

    res = await vigo(envoy, "init", "--passphrase-fd", "0", stdin=ALICE_PASS)
    assert res.returncode == 0, res.stderr
    res = await vigo(envoy, "pubkey")
    recipient = res.stdout.decode().strip()
    assert recipient.startswith("ssh-ed25519 ")
    secret = os.urandom(200_000) + b"the end"
    ciphertext = shared_dir / "secret.age"
    ciphertext.write_bytes(pyrage.encrypt(secret, [pyrage.ssh.Recipient.from_str(recipient)]))

    out = shared_dir / "recovery.key"
    res = await export(envoy, str(out), b"wrong passphrase\n")
    assert res.returncode == 4 and b"wrong passphrase" in res.stderr and not out.exists()
    res = await export(envoy, str(out), ALICE_PASS)
    assert res.returncode == 0, res.stderr
    assert b"WARNING" in res.stderr and b"PRIVATE key" in res.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    plain = await trio.run_process(
        ["age", "-d", "-i", str(out), str(ciphertext)], capture_stdout=True, capture_stderr=True
    )
    assert plain.stdout == secret

    # never over an existing file; never while locked
    res = await export(envoy, str(out), ALICE_PASS)
    assert res.returncode == 1 and b"refusing to overwrite" in res.stderr
    await vigo(envoy, "lock")
    res = await export(envoy, str(shared_dir / "again.key"), ALICE_PASS)
    assert res.returncode == 4 and b"unlock" in res.stderr


async def test_rotate_passphrase_rewraps_the_same_key(
    envoy: FakeEnrolled, root_daemon: Daemon
) -> None:
    assert (
        await vigo(envoy, "init", "--no-unlock", "--passphrase-fd", "0", stdin=ALICE_PASS)
    ).returncode == 0
    pub = (await vigo(envoy, "pubkey")).stdout
    res = await vigo(
        envoy, "rotate-passphrase", "--passphrase-fd", "0", stdin=b"nope nope\nnew passphrase 2\n"
    )
    assert res.returncode == 4 and b"wrong passphrase" in res.stderr
    res = await vigo(
        envoy, "rotate-passphrase", "--passphrase-fd", "0", stdin=ALICE_PASS + b"short\n"
    )
    assert res.returncode == 2 and b"at least 8" in res.stderr
    res = await vigo(
        envoy, "rotate-passphrase", "--passphrase-fd", "0", stdin=ALICE_PASS + b"new passphrase 2\n"
    )
    assert res.returncode == 0, res.stderr
    assert (await vigo(envoy, "pubkey")).stdout == pub
    assert (await vigo(envoy, "unlock", "--passphrase-fd", "0", stdin=ALICE_PASS)).returncode == 4
    res = await vigo(envoy, "unlock", "--passphrase-fd", "0", stdin=b"new passphrase 2\n")
    assert res.returncode == 0, res.stderr
    status = json.loads((await vigo(envoy, "status", "--json")).stdout)
    assert status["state"] == "unlocked" and status["wrap_version"] == 2
    members = json.loads((await vigo(envoy, "members", "--json")).stdout)
    assert [m["uuid"] for m in members["members"]] == [str(envoy.uuid)]
    assert members["verified"] is True


async def test_no_terminal_and_no_fd_is_a_clear_error(
    envoy: FakeEnrolled, root_daemon: Daemon
) -> None:
    res = await trio.run_process(
        [
            "setsid",
            str(BIN / "vigo"),
            "swarm",
            "puddle",
            "init",
            "--state-dir",
            str(envoy.paths.root),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert res.returncode == 2 and b"--passphrase-fd" in res.stderr, res.stderr
    assert (await vigo(envoy, "status")).stdout.startswith(b"no puddle")


async def test_control_operations_refuse_bad_arguments(
    envoy: FakeEnrolled, root_daemon: Daemon
) -> None:
    sock = envoy.paths.control_socket

    async def op(name: str, args: dict) -> str:
        with pytest.raises(ControlError) as info:
            await trio.to_thread.run_sync(call, sock, name, args)
        return f"{info.value.code}: {info.value.message}"

    assert (await op("puddle.unlock", {"seed": "zz"})).startswith("bad_request")
    assert (await op("puddle.unlock", {"seed": "00" * 31})).startswith("bad_request")
    assert (await op("puddle.unlock", {"seed": "00" * 32})).startswith("no_puddle")
    assert (await op("puddle.init", {"state": {"identity": "AAAA", "members": {}}})).startswith(
        "corrupt"
    )
    assert (await op("puddle.join", {"envoy": "x", "code": "12345678"})).startswith(
        "pairing_malformed"
    )
    assert (await vigo(envoy, "init", "--passphrase-fd", "0", stdin=ALICE_PASS)).returncode == 0
    assert "does not belong" in await op("puddle.unlock", {"seed": "00" * 32})
    assert (await op("puddle.unlock", {"seed": "00" * 32, "idle_timeout_s": -1})).startswith(
        "bad_request"
    )
    assert (await op("puddle.rotate", {"identity": 5})).startswith("corrupt")
    assert (await op("puddle.init", {"state": None})).startswith("corrupt")


async def test_bob_cannot_see_or_reach_alices_lockbox(
    envoy: FakeEnrolled,
    nursery: trio.Nursery,
    users: tuple[pwd.struct_passwd, pwd.struct_passwd],
) -> None:
    alice, bob = users
    # a file made before the watcher is set up is found by the rescan
    await start_daemon(envoy, nursery, "127.0.0.191", lockbox_rescan_s=0.5)
    sock = ["--socket", str(envoy.paths.control_socket)]

    async def cli(user: pwd.struct_passwd, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
        return await trio.to_thread.run_sync(
            run_cli_as, user, ["swarm", "puddle", *argv, *sock], stdin
        )

    code, _, err = await cli(alice, "init", "--passphrase-fd", "0", stdin=ALICE_PASS)
    assert code == 0, err
    box = Path(alice.pw_dir) / "lockbox"
    with trio.fail_after(30):
        while not box.is_dir():
            await trio.sleep(0.05)
    st = box.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.pw_uid, 0o700)
    (box / "diary.txt").write_bytes(b"dear diary")
    os.chown(box / "diary.txt", alice.pw_uid, alice.pw_gid)

    async def lockbox_of(user: pwd.struct_passwd) -> dict:
        code, out, err = await cli(user, "status", "--json")
        assert code == 0, err
        return json.loads(out).get("lockbox", {})

    with trio.fail_after(30):
        while (await lockbox_of(alice)).get("records") != 1:
            await trio.sleep(0.1)
    assert (await lockbox_of(alice))["files"] == 1
    # bob has no puddle: status shows none, and the daemon's op answers for him only
    assert (await lockbox_of(bob)) == {}

    def bobs_lockbox_status() -> int:
        print(json.dumps(call(envoy.paths.control_socket, "lockbox.status")))
        return 0

    code, out, err = await trio.to_thread.run_sync(run_as, bob, bobs_lockbox_status)
    assert code == 0, err
    assert json.loads(out) == {"state": "none"}
