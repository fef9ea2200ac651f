"""Run inside a lab host: send hostile datagrams to the swarm's multicast group.

argv: GROUP PORT VICTIM_UUID [COUNT]. Sends from this host's own address:
garbage, truncated and oversized packets, and well-formed announcements whose UUID is
not the one in this host's certificate (the victim's, and random ones), all pointing at
this host's real peer-channel port 1531.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import uuid


def main() -> None:
    group, port, victim = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    rng = random.Random(1531)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)

    def announce(ident: str, **over: object) -> bytes:
        obj: dict[str, object] = {
            "vigo": "swarm/1",
            "uuid": ident,
            "addrs": ["10.77.0.99"],
            "port": 1531,
            "mv": 0,
        }
        obj.update(over)
        return json.dumps(obj).encode()

    good = announce(victim)
    packets = [
        b"",
        b"\x00",
        b"{",
        b"[" * 2000,
        b"\xff\xfe" * 300,
        good[: len(good) // 2],
        announce(victim, port=0),
        announce(victim, port=-1),
        announce(victim, mv=-5),
        announce("x" * 36),
        announce(victim, addrs="nope"),
        announce(victim, extra=1),
        b"A" * 1400,
    ]
    sent = 0
    for _ in range(count):
        for p in packets:
            sock.sendto(p, (group, port))
            sent += 1
        for _ in range(20):
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1300)))
            sock.sendto(blob, (group, port))
            sent += 1
        # spoofs: a real envoy's UUID, and random UUIDs, from this host's address
        sock.sendto(announce(victim), (group, port))
        sock.sendto(announce(str(uuid.uuid4())), (group, port))
        sent += 2
    print(sent)


if __name__ == "__main__":
    main()
