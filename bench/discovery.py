"""Time from daemon start to every envoy confirming every other, in netlab (root).

Server + N envoys (default 4) in network namespaces; measured twice in one run:
through multicast alone (server hints off) and through server hints alone (multicast
dropped by nftables). The baseline, in the same run, is how long the same daemons take
to start answering their control socket: discovery cannot be faster than start-up.

Target (issue 2): every envoy lists the other N-1 as mTLS-confirmed peers within 5 s.
Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import time

from netlab import Lab
from netlab.fleet import Fleet

TARGET_S = 5.0


def run(envoys: int, path: str) -> tuple[float, float]:
    config: dict[str, object] = {"checkin_interval_s": 2}
    if path == "multicast":
        config["server_hints_enabled"] = False
    with Lab.create(envoys) as lab:
        fleet = Fleet(lab, agent_config=config)
        fleet.start_server()
        fleet.enroll_all()
        if path == "server-hints":
            for host in lab.envoys:
                lab.drop_multicast(host)
        t0 = time.monotonic()
        for host in lab.envoys:
            fleet.start_envoy(host)
        fleet.wait_ready(timeout_s=60)
        ready = time.monotonic() - t0
        found = fleet.wait_until_confirmed(timeout_s=60)
        return max(found.values()), ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--envoys", type=int, default=4)
    args = ap.parse_args()
    result: dict[str, float | int] = {"envoys": args.envoys, "target_s": TARGET_S}
    for path in ("multicast", "server-hints"):
        worst, ready = run(args.envoys, path)
        key = path.replace("-", "_")
        result[f"{key}_s"] = round(worst, 2)
        result[f"{key}_startup_baseline_s"] = round(ready, 2)
        result[f"{key}_vs_target"] = round(worst / TARGET_S, 3)
        result[f"{key}_vs_startup"] = round(worst / ready, 2)
        print(f"{path}: all confirmed after {worst:.2f} s (daemons answering after {ready:.2f} s)")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
