"""filecast to a fleet in netlab with every host link capped (tbf), against a central
HTTPS server, in one run (root).

- swarm: `vigocli swarm filecast distribute` of S bytes to a seeder + N receivers;
  T = time from the record's publication (the server's log line of signing it, after it
  stored the file) until every receiver's target is materialized. The upload before it
  (operator -> server, not capped, the same for any distribution method) is reported
  apart, as upload_s; distribute returns 0.2-0.5 s after the signing (the CLI process
  exits), which swarm_from_cli_s leaves out of T;
- physical bound S/B for one link of B bit/s;
- central baseline: the same N receivers download the file at once with curl over
  mutual TLS from nginx on the server host, whose link has the same cap;
- seeder egress: bytes the seeder's interface sent during the swarm run.

Targets (issue 3): T <= 1.3 x S/B, egress <= 1.5 x S.
Last line: RESULT {json} with T/(S/B), central/T and egress/S.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import psutil
from _debian import ensure

from netlab import Lab
from netlab.fleet import Fleet

NGINX_CONF = """
user root;
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    server {{
        listen {addr}:9443 ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate {root}/srv.pem;
        ssl_certificate_key {root}/srv.key;
        ssl_client_certificate {ca};
        ssl_verify_client on;
        root {root}/www;
    }}
}}
"""


def tx_bytes(lab: Lab, host: object) -> int:
    out = lab.exec(host, ["cat", "/sys/class/net/eth0/statistics/tx_bytes"]).stdout  # type: ignore[arg-type]
    return int(out.strip())


def logged_at(log_file: Path, needle: str) -> float:
    """Wall time of the first log line containing ``needle``."""
    for line in log_file.read_text().splitlines():
        if needle in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    raise RuntimeError(f"{log_file.name} never logged {needle!r}")


def rx_bytes(lab: Lab, host: object) -> int:
    out = lab.exec(host, ["cat", "/sys/class/net/eth0/statistics/rx_bytes"]).stdout  # type: ignore[arg-type]
    return int(out.strip())


class Timeline:
    """``--timeline``: samples the seeder's sent and every receiver's received bytes about
    every 0.2 s in a thread, and prints the rates (where the link sat idle: the ramp at
    the start, the tail at the end)."""

    def __init__(self, lab: Lab, seeder: object, receivers: list[object]) -> None:
        import threading

        self.lab, self.seeder, self.receivers = lab, seeder, receivers
        self.samples: list[tuple[float, int, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self._t0
            got = [rx_bytes(self.lab, h) for h in self.receivers]
            self.samples.append((now, tx_bytes(self.lab, self.seeder), got))
            self._stop.wait(0.2)

    def stop_and_print(self, published_s: float) -> None:
        """Print the rates; times are seconds since the record's publication (``published_s``
        after the timeline began; the upload before it shows as negative times)."""
        self._stop.set()
        self._thread.join()
        print("  time  seeder sends | each receiver gets (Mbit/s)")
        for (t0, s0, r0), (t1, s1, r1) in itertools.pairwise(self.samples):
            dt = t1 - t0
            rates = " ".join(f"{(b - a) * 8 / dt / 1e6:5.1f}" for a, b in zip(r0, r1, strict=True))
            print(f"{t1 - published_s:6.2f}  {(s1 - s0) * 8 / dt / 1e6:6.1f}       | {rates}")


def daemons_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the envoy daemons have used so far."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--receivers", type=int, default=8)
    ap.add_argument("--rate-mbit", type=float, default=100.0)
    ap.add_argument("--chunk-kib", type=int, default=0, help="chunk size (default: the server's)")
    ap.add_argument("--no-central", action="store_true", help="skip the central baseline")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy every daemon's log here")
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="print the links' rates every 0.2 s of the swarm run",
    )
    args = ap.parse_args()
    if not args.no_central:
        ensure("nginx", "nginx-light")
        ensure("curl", "curl")
    size = args.mib << 20
    bound_s = size * 8 / (args.rate_mbit * 1e6)
    with Lab.create(args.receivers + 1, rate_mbit=args.rate_mbit) as lab:
        fleet = Fleet(lab, agent_config={"checkin_interval_s": 1})
        fleet.start_server()
        fleet.enroll_all()
        seeder, *receivers = lab.envoys
        seeder_pid = fleet.start_envoy(
            seeder, {"checkin_interval_s": 1, "seed_dirs": [str(fleet.data_dir / "seed")]}
        )
        pids = [fleet.start_envoy(host) for host in receivers]
        pids.append(seeder_pid)
        fleet.wait_until_confirmed(timeout_s=120)
        src = lab.root_dir / "payload.bin"
        src.write_bytes(os.urandom(size))
        want = hashlib.sha256(src.read_bytes()).hexdigest()

        # --- swarm
        idle0 = daemons_cpu_s(pids)
        time.sleep(5)
        idle_cpu_per_s = (daemons_cpu_s(pids) - idle0) / 5
        egress0 = tx_bytes(lab, seeder)
        cpu0 = daemons_cpu_s(pids)
        server_pids = lab.pids(fleet.server)
        server_cpu0 = daemons_cpu_s(server_pids)
        wall0 = time.time()
        t0 = time.monotonic()
        timeline = Timeline(lab, seeder, receivers) if args.timeline else None
        fleet.vigocli(
            "swarm",
            "filecast",
            "distribute",
            str(src),
            "--target",
            "bench/payload",
            *(["--chunk-bytes", str(args.chunk_kib << 10)] if args.chunk_kib else []),
            timeout_s=300,
        )
        published = time.monotonic()
        upload_s = published - t0
        done: dict[str, float] = {}

        def all_done() -> bool:
            for h in receivers:
                link = h.state_dir / "swarm" / "files" / "bench" / "payload"
                if h.name not in done and link.is_symlink() and link.exists():
                    done[h.name] = time.monotonic() - published
            return len(done) == len(receivers)

        fleet.wait_for(all_done, 600, "every receiver materializing the payload", interval_s=0.05)
        swarm_from_cli_s = max(done.values())
        egress = tx_bytes(lab, seeder) - egress0
        cpu_s = daemons_cpu_s(pids) - cpu0
        server_cpu_s = daemons_cpu_s(server_pids) - server_cpu0
        print("seeder served:", fleet.status(seeder).get("blob_serving"))
        # the blob is servable from the seeder's "seeding" line; the server signed the
        # record (its log line) a little before distribute returned (the CLI's exit)
        seeding_s = logged_at(seeder.log_file, "filecast: seeding") - wall0 - upload_s
        signed_s = logged_at(fleet.server.log_file, "filecast: bench/payload") - wall0 - upload_s
        swarm_s = swarm_from_cli_s - signed_s  # T from the signing
        if timeline is not None:
            timeline.stop_and_print(upload_s + signed_s)
        print(
            f"upload {upload_s:.2f} s; the server signed {-signed_s:.2f} s before it returned;"
            f" the seeder serves it {seeding_s - signed_s:.2f} s after the signing"
        )
        after = {k: round(v - signed_s, 2) for k, v in sorted(done.items())}
        print("materialized after the signing:", after)
        if args.keep_logs:
            import shutil

            os.makedirs(args.keep_logs, exist_ok=True)
            for h in lab.hosts:
                if h.log_file.exists():
                    shutil.copy(h.log_file, os.path.join(args.keep_logs, h.name + ".log"))
        for h in receivers:
            link = h.state_dir / "swarm" / "files" / "bench" / "payload"
            assert hashlib.sha256(link.read_bytes()).hexdigest() == want, h.name

        if args.no_central:
            print(f"idle fleet CPU {idle_cpu_per_s:.3f} s/s")
            print(
                f"swarm {swarm_s:.2f} s, egress {egress / size:.2f} x S, envoy CPU {cpu_s:.1f} s, "
                f"server CPU {server_cpu_s:.1f} s"
            )
            return
        # --- central baseline: nginx on the server host, all receivers at once
        from vigo_server_lite.ca import FleetCA
        from vigo_swarm import pki

        ca = FleetCA.load_or_create(fleet.data_dir / "ca")
        root = lab.root_dir / "nginx"
        (root / "www").mkdir(parents=True)
        os.link(src, root / "www" / "payload.bin")
        key = pki.generate_key()
        pki.write_secret_file(root / "srv.key", pki.key_to_pem(key))
        (root / "srv.pem").write_bytes(ca.issue_server([fleet.server.address], key).pem)
        (root / "nginx.conf").write_text(
            NGINX_CONF.format(root=root, addr=fleet.server.address, ca=fleet.ca_file)
        )
        lab.exec(fleet.server, ["nginx", "-c", str(root / "nginx.conf")])
        import subprocess

        t1 = time.monotonic()
        procs = []
        for h in receivers:
            ident = h.state_dir / "identity"
            procs.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        h.namespace,
                        "curl",
                        "-sS",
                        "--http1.1",
                        "--fail",
                        "--cacert",
                        str(ident / "ca.pem"),
                        "--cert",
                        str(ident / "cert.pem"),
                        "--key",
                        str(ident / "key.pem"),
                        "-o",
                        "/dev/null",
                        f"https://{fleet.server.address}:9443/payload.bin",
                    ]
                )
            )
        codes = [p.wait(timeout=900) for p in procs]
        central_s = time.monotonic() - t1
        assert codes == [0] * len(codes), codes
    result = {
        "bytes": size,
        "receivers": args.receivers,
        "rate_mbit": args.rate_mbit,
        "swarm_s": round(swarm_s, 2),
        "upload_s": round(upload_s, 2),
        "total_s": round(upload_s + swarm_from_cli_s, 2),
        "seeder_serving_after_s": round(seeding_s - signed_s, 2),
        "swarm_from_cli_s": round(swarm_from_cli_s, 2),
        "bound_s": round(bound_s, 2),
        "central_s": round(central_s, 2),
        "seeder_egress_bytes": egress,
        "envoy_cpu_s": round(cpu_s, 2),
        "server_cpu_s": round(server_cpu_s, 2),
        "t_over_bound": round(swarm_s / bound_s, 3),
        # the link's real goodput (TCP/IP/TLS framing), measured by the central run: one
        # file over one capped link takes central_s / N there
        "link_s": round(central_s / args.receivers, 2),
        "t_over_link": round(swarm_s / (central_s / args.receivers), 3),
        "central_over_t": round(central_s / swarm_s, 3),
        "egress_over_s": round(egress / size, 3),
        "targets": {"t_over_bound": 1.3, "egress_over_s": 1.5},
    }
    print(
        f"swarm {swarm_s:.2f} s (bound {bound_s:.2f} s), central {central_s:.2f} s, "
        f"seeder egress {egress / size:.2f} x S, envoy CPU {cpu_s:.1f} s"
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
