"""Bench: 200 concurrent enrollments against a server lite on loopback.

Starts ``vigo-server-lite serve`` as a subprocess with a temporary data dir, creates
one join token, then in one trio nursery runs N tasks that each generate a key and CSR
and enroll with the library function ``vigo_agent.enroll.enroll`` (two TLS connections
each: the unpinned CA fetch and the pinned enrollment). Baselines measured in the same
run, against the same server: sequential enrollments, and raw ``GET /api/v1/health`` on
one keep-alive connection. Prints one final line ``RESULT {json}``.

    .venv/bin/python bench/enroll.py [--enrollments 200] [--sequential 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from vigo_agent.enroll import EnrollError, enroll
from vigo_swarm import pki

BIN = Path(sys.executable).parent


async def start_server(data: Path, ready: Path) -> trio.Process:
    cmd = [
        str(BIN / "vigo-server-lite"),
        "serve",
        "--data-dir",
        str(data),
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        str(ready),
    ]
    proc = await trio.lowlevel.open_process(cmd, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    log = b""
    with trio.fail_after(60):
        while b"server lite ready" not in log:
            chunk = await proc.stderr.receive_some(4096)
            if not chunk:
                raise SystemExit(f"server lite did not start:\n{log.decode()}")
            log += chunk
    return proc


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Keep reading the server's log so it never blocks on a full pipe."""
    while await stream.receive_some(65536):
        pass


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vigo-bench-enroll-") as tmp_name:
        tmp = Path(tmp_name)
        proc = await start_server(tmp / "server", tmp / "ready.json")
        try:
            async with trio.open_nursery() as nursery:
                assert proc.stderr is not None
                nursery.start_soon(drain, proc.stderr)
                info = json.loads(await trio.Path(tmp / "ready.json").read_text())
                admin_token = (await trio.Path(info["admin_token_file"]).read_text()).strip()
                result = await measure(args, tmp, info, admin_token)
                nursery.cancel_scope.cancel()
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result["server_exit"] = proc.returncode
        return result


async def measure(
    args: argparse.Namespace, tmp: Path, info: dict[str, Any], admin_token: str
) -> dict[str, Any]:
    url = info["url"]
    admin = {"authorization": f"Bearer {admin_token}"}
    ctx = pki.client_context(Path(info["ca_file"]), check_hostname=True)
    async with httpx.AsyncClient(base_url=url, verify=ctx, trust_env=False) as client:
        resp = await client.post(
            "/api/v1/tokens",
            headers=admin,
            json={
                "ttl_s": 3600,
                "max_uses": args.enrollments + args.sequential,
                "description": "bench",
            },
        )
        resp.raise_for_status()
        token = resp.json()["token"]

        # Baseline 1: raw health requests on one keep-alive connection.
        await client.get("/api/v1/health")
        t0 = time.perf_counter()
        for _ in range(args.health):
            (await client.get("/api/v1/health")).raise_for_status()
        health_per_s = args.health / (time.perf_counter() - t0)

    # Baseline 2: sequential enrollments.
    t0 = time.perf_counter()
    for i in range(args.sequential):
        await enroll(url, token, tmp / "seq" / str(i), hostname=f"seq-{i}")
    sequential_per_s = args.sequential / (time.perf_counter() - t0)

    # The bench: N concurrent enrollments in one nursery.
    errors: list[str] = []

    async def one(i: int) -> None:
        try:
            await enroll(url, token, tmp / "conc" / str(i), hostname=f"bench-{i}")
        except EnrollError as exc:
            errors.append(f"{exc.code}: {exc.message}")

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(args.enrollments):
            nursery.start_soon(one, i)
    elapsed = time.perf_counter() - t0
    enroll_per_s = args.enrollments / elapsed

    async with httpx.AsyncClient(base_url=url, verify=ctx, trust_env=False) as client:
        envoys = (await client.get("/api/v1/envoys", headers=admin)).json()["envoys"]
        uses = (await client.get("/api/v1/tokens", headers=admin)).json()["tokens"][0]["uses"]
    unique = {e["uuid"] for e in envoys}
    ok = args.enrollments - len(errors)
    if len(unique) != ok + args.sequential or uses != ok + args.sequential:
        errors.append(f"bookkeeping: {len(unique)} envoys, {uses} token uses")
    for line in errors[:5]:
        print(f"error: {line}", file=sys.stderr)
    return {
        "enrollments": args.enrollments,
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "enroll_per_s": round(enroll_per_s, 1),
        "sequential_enroll_per_s": round(sequential_per_s, 1),
        "concurrent_vs_sequential": round(enroll_per_s / sequential_per_s, 2),
        "health_per_s": round(health_per_s, 1),
        "enroll_vs_health": round(enroll_per_s / health_per_s, 3),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--health", type=int, default=500)
    args = parser.parse_args()
    result = trio.run(bench, args)
    print("RESULT " + json.dumps(result, sort_keys=True))
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
