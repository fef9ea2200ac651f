"""Fixtures for the netlab tests: the lab factories from ``netlab.pytest_fixtures`` and
``probe``, which runs ``netprobe.py`` inside lab namespaces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ld_netlab import bob, homes_dir  # noqa: F401  (longdrawer: a real user)

from netlab import Lab, wait_for
from netlab.pytest_fixtures import fleet_factory, lab_factory  # noqa: F401

NETPROBE = Path(__file__).with_name("netprobe.py")
FAKE_VIGO = Path(__file__).with_name("fake_vigo.py")


class Probe:
    """Reachability and multicast checks between lab hosts, each bounded in time."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.rounds = 0

    def ping(self, lab: Lab, src: str, dst: str, timeout_s: float = 1.0) -> bool:
        """One ICMP echo from ``src`` to ``dst``: True on a reply within ``timeout_s``."""
        argv = [sys.executable, str(NETPROBE), "ping", lab.host(dst).address, str(timeout_s)]
        out = lab.exec(src, argv, timeout_s=timeout_s + 10).stdout.strip()
        assert out in ("reply", "timeout", "refused"), out
        return out == "reply"

    def multicast(self, lab: Lab, sender: str, receivers: list[str]) -> dict[str, bool]:
        """Send one datagram to 224.0.0.42:1531 from ``sender``; report which receivers
        got it. Each receiver also gets a unicast "END" sent right after on the same
        path, so "not received" is decided by an event, not by waiting a while."""
        self.rounds += 1
        payload = f"hello-{self.rounds}"
        files: dict[str, tuple[Path, Path]] = {}
        for name in receivers:
            ready = self.tmp_path / f"{name}-{self.rounds}.ready"
            out = self.tmp_path / f"{name}-{self.rounds}.out"
            files[name] = (ready, out)
            argv = [sys.executable, str(NETPROBE), "mcast-recv", lab.host(name).address]
            lab.spawn(name, [*argv, str(ready), str(out)])
        wait_for(lambda: all(r.exists() for r, _ in files.values()), 20, "receivers to join")
        addrs = [lab.host(n).address for n in receivers]
        lab.exec(sender, [sys.executable, str(NETPROBE), "mcast-send", payload, *addrs])
        wait_for(lambda: all(o.exists() for _, o in files.values()), 20, "END at receivers")
        return {n: payload in o.read_text().splitlines() for n, (_, o) in files.items()}


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    return Probe(tmp_path)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A bin dir whose vigo, vigocli and vigo-server-lite are ``fake_vigo.py``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("vigo", "vigocli", "vigo-server-lite"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_VIGO} {name} "$@"\n')
        script.chmod(0o755)
    return bin_dir
