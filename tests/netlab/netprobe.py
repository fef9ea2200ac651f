"""Network probes run *inside* lab namespaces by the netlab tests (not a test module).

netprobe.py ping ADDR TIMEOUT_S          -> prints "reply", "timeout" or "refused"
                                            (ICMP echo; "refused": EPERM from our own
                                            nft output hook)
netprobe.py mcast-recv LOCAL READY OUT   -> joins 224.0.0.42:1531, touches READY, writes
                                            every datagram to OUT once "END" arrives
netprobe.py mcast-send PAYLOAD ADDR…     -> one multicast datagram, then a unicast "END"
                                            to each ADDR (same path, so it comes after)
"""

import os
import socket
import struct
import sys
import time
from pathlib import Path

GROUP, PORT = "224.0.0.42", 1531


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(addr: str, timeout_s: float) -> str:
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"netlab"
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        try:
            s.sendto(packet, (addr, 0))
        except PermissionError:  # dropped by nft in our own output hook
            return "refused"
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, (src, _) = s.recvfrom(2048)
            except TimeoutError:
                break
            icmp = data[(data[0] & 0x0F) * 4 :]
            kind, _, _, rid, _ = struct.unpack("!BBHHH", icmp[:8])
            if kind == 0 and rid == ident and src == addr:
                return "reply"
    return "timeout"


def mcast_recv(local: str, ready: str, out: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", PORT))
    mreq = socket.inet_aton(GROUP) + socket.inet_aton(local)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.settimeout(60)
    Path(ready).touch()
    got = []
    while True:
        data, _ = s.recvfrom(2048)
        got.append(data.decode())
        if data == b"END":
            break
    tmp = out + ".tmp"
    Path(tmp).write_text("\n".join(got))
    os.replace(tmp, out)


def mcast_send(payload: str, end_addrs: list[str]) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    try:
        s.sendto(payload.encode(), (GROUP, PORT))
    except PermissionError:  # an nft drop in the output hook reports EPERM to the sender
        print("multicast send refused (EPERM)")
    for addr in end_addrs:
        s.sendto(b"END", (addr, PORT))


if __name__ == "__main__":
    verb, args = sys.argv[1], sys.argv[2:]
    if verb == "ping":
        print(ping(args[0], float(args[1])))
    elif verb == "mcast-recv":
        mcast_recv(*args)
    elif verb == "mcast-send":
        mcast_send(args[0], args[1:])
    else:
        sys.exit(f"unknown probe {verb}")
