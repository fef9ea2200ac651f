"""Stand-ins for vigo-server-lite, vigocli and vigo that follow the command contract of
``netlab.fleet`` (not a test module). They let the Fleet plumbing be tested before and
independently of the real commands: namespaces, spawning, readiness, JSON parsing, and
real multicast between envoy namespaces.

    fake_vigo.py vigo-server-lite serve --data-dir D --listen A:P --advertise A --ready-file F
    fake_vigo.py vigocli --server U --ca-file C --admin-token-file T token create … --json
    fake_vigo.py vigo enroll --server U --token T --state-dir S --hostname N
    fake_vigo.py vigo agent run --state-dir S        (agent.yaml: multicast_enabled, crash)
    fake_vigo.py vigo swarm status|peers --state-dir S --json
"""

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import yaml

GROUP, PORT = "224.0.0.42", 1531


def write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def server(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("verb")
    for flag in ("--data-dir", "--listen", "--advertise", "--ready-file"):
        p.add_argument(flag, required=True)
    args = p.parse_args(argv)
    data = Path(args.data_dir)
    (data / "ca").mkdir(parents=True, exist_ok=True)
    (data / "ca" / "ca.pem").write_text("fake CA\n")
    (data / "admin.token").write_text(secrets.token_hex(8))
    host, port = args.listen.rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    Path(args.ready_file).write_text("ready\n")
    print("fake server listening", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.close()


def vigocli(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--admin-token-file", required=True)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    assert Path(args.ca_file).exists() and Path(args.admin_token_file).exists()
    host, port = args.server.removeprefix("https://").rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=5).close()  # server reachable?
    assert args.rest[:2] == ["token", "create"] and "--json" in args.rest, args.rest
    print(json.dumps({"token": "fake-" + secrets.token_hex(4)}))


def vigo(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("words", nargs="+")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--server")
    p.add_argument("--token")
    p.add_argument("--hostname")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    state = Path(args.state_dir)
    if args.words == ["enroll"]:
        assert args.token.startswith("fake-")
        write_json(state / "identity.json", {"uuid": str(uuid.uuid4()), "hostname": args.hostname})
    elif args.words == ["agent", "run"]:
        agent(state)
    elif args.words == ["swarm", "status"]:
        status = state / "status.json"
        if not status.exists():
            sys.exit("vigo: the daemon is not running")
        print(status.read_text())
    elif args.words == ["swarm", "peers"]:
        peers = state / "peers.json"
        print(peers.read_text() if peers.exists() else "[]")
    else:
        sys.exit(f"fake vigo: unknown command {args.words}")


def agent(state: Path) -> None:
    identity = json.loads((state / "identity.json").read_text())
    config_file = state / "agent.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    if config.get("crash"):
        sys.exit("fake agent: crashing as configured")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((GROUP, PORT))
    address = probe.getsockname()[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", PORT))
    mreq = socket.inet_aton(GROUP) + socket.inet_aton(address)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.settimeout(0.2)
    me = identity["uuid"]
    peers: dict[str, dict[str, object]] = {}
    write_json(state / "status.json", {"uuid": me, "address": address})
    try:
        while True:
            if config.get("multicast_enabled", True):
                hello = json.dumps({"uuid": me, "address": address}).encode()
                with contextlib.suppress(PermissionError):  # nft drops multicast here
                    sock.sendto(hello, (GROUP, PORT))
            try:
                data, (src, _) = sock.recvfrom(2048)
            except TimeoutError:
                continue
            hello = json.loads(data)
            if hello["uuid"] != me and hello["uuid"] not in peers:
                peers[hello["uuid"]] = {
                    "uuid": hello["uuid"],
                    "confirmed": True,
                    "addresses": [src],
                    "sources": ["multicast"],
                    "seen": time.time(),
                }
                write_json(state / "peers.json", list(peers.values()))
    finally:
        (state / "status.json").unlink(missing_ok=True)


if __name__ == "__main__":
    name, rest = sys.argv[1], sys.argv[2:]
    {"vigo-server-lite": server, "vigocli": vigocli, "vigo": vigo}[name](rest)
