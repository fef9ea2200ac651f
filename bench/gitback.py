"""gitback: full vs incremental bundles of a 2000-commit repo, and commit → mirrored.

1. Bundles (git as this user, the daemon's own ``pack_bundle``): a full bundle of a
   generated 2000-commit repo, then an incremental one after one more commit; median
   time of --rounds and the bytes of each.
2. A loopback fleet (server lite + --envoys daemons, hostnames envoy1..N, patterns
   ["envoy*"], this user opted in): the repo lives in envoy1's home root. After the
   first full bundle reached every other envoy, each of --rounds commits is timed from
   the commit until every peer's mirror holds the new tip (its packed-refs file names
   it; polled every 20 ms).

Last line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pwd
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _fleet import LoopbackFleet, wait_for
from _gitrepo import GIT_ENV, generate_repo

from vigo_swarm.gitback.packer import pack_bundle
from vigo_swarm.puddle import Person


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, n: int) -> str:
    (repo / "bench.txt").write_text(f"change {n} {time.time_ns()}\n")
    git(repo, "add", "bench.txt")
    git(repo, "commit", "-q", "-m", f"bench {n}")
    return git(repo, "rev-parse", "HEAD")


def time_bundle(person: Person, repo: Path, exclude: list[str], out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open(out, "wb") as f:
        pack_bundle(person, repo / ".git", exclude, f)
    return time.perf_counter() - started, out.stat().st_size


def bundles(work: Path, commits: int, rounds: int) -> dict[str, float]:
    me = pwd.getpwuid(os.getuid())
    person = Person(me.pw_uid, me.pw_gid, Path(me.pw_dir))
    repo = work / "bundles"
    generate_repo(repo, commits, tag_every=500)
    fulls = [time_bundle(person, repo, [], work / "full.bundle") for _ in range(rounds)]
    incs = []
    for n in range(rounds):
        before = git(repo, "rev-parse", "HEAD")
        commit(repo, n)
        incs.append(time_bundle(person, repo, [before], work / "inc.bundle"))
    return {
        "full_s": round(statistics.median(t for t, _ in fulls), 4),
        "full_bytes": fulls[0][1],
        "incremental_s": round(statistics.median(t for t, _ in incs), 4),
        "incremental_bytes": int(statistics.median(b for _, b in incs)),
    }


def mirrored_everywhere(fleet: LoopbackFleet, oid: str) -> bool:
    for i in range(1, fleet.envoys):
        mirrors = fleet.state(i) / "swarm" / "gitback" / "mirrors"
        found = list(mirrors.glob("*/*/notes.git/packed-refs"))
        if not found or oid not in found[0].read_text():
            return False
    return True


def fleet_latency(work: Path, commits: int, envoys: int, rounds: int) -> dict[str, float]:
    me = pwd.getpwuid(os.getuid()).pw_name
    fleet = LoopbackFleet(envoys=envoys, root=work / "fleet")
    fleet.root.mkdir(parents=True, exist_ok=True)
    fleet.data.mkdir(parents=True, exist_ok=True)
    (fleet.data / "server.yaml").write_text('swarm:\n  gitback:\n    enabled: ["envoy*"]\n')
    try:
        fleet.start_server()
        fleet.enroll_all()
        fleet.vigocli("swarm", "gitback", "users", "set", me, "true")
        repo = fleet.root / "homes" / fleet.name(0) / me / "gitback" / "notes"
        generate_repo(repo, commits)
        (repo / ".gitback.yaml").write_text("")
        for i in range(envoys):
            home_root = fleet.root / "homes" / fleet.name(i)
            home_root.mkdir(parents=True, exist_ok=True)
            with open(fleet.state(i) / "agent.yaml", "a") as f:
                f.write(
                    f"home_root: {home_root}\ncheckin_interval_s: 1\n"
                    "gitback_scan_s: 0.1\ngitback_pull_s: 2\n"
                )
            fleet.start_envoy(i)
        first_started = time.monotonic()
        head = git(repo, "rev-parse", "HEAD")
        wait_for(lambda: mirrored_everywhere(fleet, head), 120, "the first full bundle")
        first_s = time.monotonic() - first_started
        times = []
        for n in range(rounds):
            started = time.monotonic()
            oid = commit(repo, n)
            wait_for(functools.partial(mirrored_everywhere, fleet, oid), 60, f"commit {n}")
            times.append(time.monotonic() - started)
        return {
            "first_full_mirrored_s": round(first_s, 2),
            "commit_to_mirrored_p50_s": round(statistics.median(times), 3),
            "commit_to_mirrored_max_s": round(max(times), 3),
            "scan_interval_s": 0.1,
        }
    finally:
        fleet.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--envoys", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vigo-bench-gitback-"))
    try:
        result = {"commits": args.commits, "envoys": args.envoys}
        result |= bundles(work, args.commits, args.rounds)
        result["full_over_incremental_bytes"] = round(
            result["full_bytes"] / result["incremental_bytes"], 1
        )
        result |= fleet_latency(work, args.commits, args.envoys, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
