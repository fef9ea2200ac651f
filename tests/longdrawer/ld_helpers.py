"""Longdrawer test helpers: envoys on loopback with a real swarm node, and a tree digest."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from fleet_helpers import FakeEnrolled, loopback_node, make_envoy

from vigo_server_lite.ca import FleetCA
from vigo_swarm import SwarmNode
from vigo_swarm.longdrawer import LongdrawerConfig, LongdrawerService


@dataclass
class LdEnvoy:
    node: SwarmNode
    svc: LongdrawerService
    home_root: Path
    env: FakeEnrolled
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None

    def folder(self, login: str = "root") -> Path:
        return self.home_root / login / "longdrawer"


async def start_envoy(
    ca: FleetCA,
    tmp: Path,
    nursery: trio.Nursery,
    n: int,
    mport: int,
    *,
    login: str = "root",
    make_folder: bool = True,
    env: FakeEnrolled | None = None,
) -> LdEnvoy:
    env = env or make_envoy(ca, tmp, f"ld{n}")
    addr = f"127.0.0.{n}"
    node = loopback_node(env, n, mport)
    home_root = tmp / f"ld{n}" / "home"
    if make_folder:
        (home_root / login / "longdrawer").mkdir(parents=True, exist_ok=True)
    svc = LongdrawerService(
        node,
        env.paths.root,
        LongdrawerConfig(
            port=mport + 1,
            interface_address=addr,
            announce_interval_s=0.5,
            rescan_interval_s=3.0,
            people_interval_s=0.5,
            pull_interval_s=1.0,
            chunk_bytes=64 * 1024,
            home_root=str(home_root),
        ),
    )
    await nursery.start(node.run)
    await nursery.start(svc.run)
    return LdEnvoy(node, svc, home_root, env)


async def spawn(
    ca: FleetCA, tmp: Path, nursery: trio.Nursery, n: int, mport: int, **kw: Any
) -> LdEnvoy:
    """An envoy in its own cancel scope: ``stop(envoy)`` ends it (its state stays)."""

    async def run(task_status: trio.TaskStatus[LdEnvoy]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                envoy = await start_envoy(ca, tmp, inner, n, mport, **kw)
                envoy.scope, envoy.stopped = scope, trio.Event()
                task_status.started(envoy)
        envoy.svc.close()
        envoy.stopped.set()

    result: LdEnvoy = await nursery.start(run)
    return result


async def stop(envoy: LdEnvoy) -> None:
    assert envoy.scope is not None and envoy.stopped is not None
    envoy.scope.cancel()
    await envoy.stopped.wait()


def partnered(*envoys: LdEnvoy) -> bool:
    return all(
        len(e.svc.people) == 1
        and all(len(ps.partners) == len(envoys) - 1 for ps in e.svc.people.values())
        for e in envoys
    )


def tree_digest(root: Path) -> str:
    """Content, modes, ownership and symlink targets of every path below ``root``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{st.st_mode & 0o7777:o}\0".encode())
            h.update(f"{st.st_uid}:{st.st_gid}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def wait_until(pred: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)


async def pair(tmp: Path, nursery: trio.Nursery, n1: int, n2: int) -> tuple[LdEnvoy, LdEnvoy]:
    """Two envoys on loopback (127.0.0.n1, n2), partnered for root's folder."""
    import uuid

    ca = FleetCA.load_or_create(tmp / "ca")
    mport = 40000 + uuid.uuid4().int % 20000
    a = await start_envoy(ca, tmp, nursery, n1, mport)
    b = await start_envoy(ca, tmp, nursery, n2, mport)
    await wait_until(lambda: partnered(a, b), "partners")
    return a, b
