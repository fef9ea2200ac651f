"""A loopback fleet for benchmarks: a real server lite, real `vigo enroll`, real daemons.

Each envoy gets its own 127.0.0.x address; multicast goes over lo (IP_MULTICAST_IF),
so nothing leaves the machine and no root is needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class LoopbackFleet:
    envoys: int
    base: int = 70  # 127.0.0.<base+i>
    mport: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vigo-bench-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mport = self.mport or 42000 + os.getpid() % 10000
        self.server_addr = f"127.0.0.{self.base}"
        self.server_url = f"https://{self.server_addr}:18443"
        self.data = self.root / "server"

    def start_server(self) -> None:
        ready = self.root / "server.ready"
        with open(self.root / "server.log", "wb") as log:
            self.procs["server"] = subprocess.Popen(
                [
                    str(BIN / "vigo-server-lite"),
                    "serve",
                    "--data-dir",
                    str(self.data),
                    "--listen",
                    f"{self.server_addr}:18443",
                    "--advertise",
                    self.server_addr,
                    "--ready-file",
                    str(ready),
                    "--checkin-interval-s",
                    "10",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for(ready.exists, 30, "server lite ready")

    def vigocli(self, *args: str) -> Any:
        out = subprocess.run(
            [
                str(BIN / "vigocli"),
                "--server",
                self.server_url,
                "--ca-file",
                str(self.data / "ca" / "ca.pem"),
                "--admin-token-file",
                str(self.data / "admin.token"),
                *args,
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)

    def name(self, i: int) -> str:
        return f"envoy{i + 1}"

    def state(self, i: int) -> Path:
        return self.root / self.name(i)

    def enroll_all(self) -> None:
        token = self.vigocli("token", "create", "--max-uses", str(self.envoys))["token"]
        for i in range(self.envoys):
            subprocess.run(
                [
                    str(BIN / "vigo"),
                    "enroll",
                    "--server",
                    self.server_url,
                    "--token",
                    token,
                    "--state-dir",
                    str(self.state(i)),
                    "--hostname",
                    self.name(i),
                ],
                check=True,
                capture_output=True,
            )
            addr = f"127.0.0.{self.base + 1 + i}"
            (self.state(i) / "agent.yaml").write_text(
                f"listen_address: {addr}\nadvertise_addresses: [{addr}]\n"
                f"multicast_interface: {addr}\nmulticast_port: {self.mport}\nport: 1531\n"
            )

    def start_envoy(self, i: int) -> subprocess.Popen[bytes]:
        with open(self.root / f"{self.name(i)}.log", "wb") as log:
            proc = subprocess.Popen(
                [str(BIN / "vigo"), "agent", "run", "--state-dir", str(self.state(i))],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs[self.name(i)] = proc
        return proc

    def peers(self, i: int) -> list[dict[str, Any]]:
        res = subprocess.run(
            [str(BIN / "vigo"), "swarm", "peers", "--state-dir", str(self.state(i)), "--json"],
            capture_output=True,
            text=True,
        )
        return json.loads(res.stdout) if res.returncode == 0 else []

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
