"""Idle cost of the envoy daemon with 3 confirmed peers, against a bare trio process.

Runs a loopback fleet (server lite + 4 envoys), waits until every envoy has confirmed
its 3 peers, then samples one daemon's RSS and CPU over --seconds (default 60). The
baseline, measured in the same run, is a bare `python -c "import trio; trio.run(sleep_forever)"`.

Targets (issue 2): idle RSS <= 40 MB, idle CPU <= 1 %.
Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil
from _fleet import LoopbackFleet, wait_for


def sample(pid: int, seconds: float) -> tuple[float, float]:
    proc = psutil.Process(pid)
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    peak = 0
    while time.monotonic() - t0 < seconds:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(1.0)
    cpu1 = proc.cpu_times()
    used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return peak / 1e6, 100.0 * used / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    fleet = LoopbackFleet(envoys=4)
    baseline = subprocess.Popen([sys.executable, "-c", "import trio; trio.run(trio.sleep_forever)"])
    try:
        fleet.start_server()
        fleet.enroll_all()
        procs = [fleet.start_envoy(i) for i in range(4)]
        wait_for(
            lambda: all(sum(p["confirmed"] for p in fleet.peers(i)) == 3 for i in range(4)),
            60,
            "every envoy confirming 3 peers",
        )
        print(f"fleet up; sampling envoy1 and the baseline for {args.seconds:g} s", flush=True)
        rss, cpu = sample(procs[0].pid, args.seconds)
        base_rss, base_cpu = sample(baseline.pid, min(10.0, args.seconds))
        still = sum(p["confirmed"] for p in fleet.peers(0))
    finally:
        baseline.kill()
        fleet.stop()
    result = {
        "idle_rss_mb": round(rss, 1),
        "idle_cpu_pct": round(cpu, 2),
        "peers_confirmed": still,
        "baseline_trio_rss_mb": round(base_rss, 1),
        "baseline_trio_cpu_pct": round(base_cpu, 2),
        "rss_vs_bare_trio": round(rss / base_rss, 2),
        "rss_target_ratio": round(rss / 40.0, 2),
        "cpu_target_ratio": round(cpu / 1.0, 2),
        "seconds": args.seconds,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
