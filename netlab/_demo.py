"""The demo (README command 1): a small fleet in namespaces finds itself over mTLS.

The demo is a list of :class:`Step` s run in order against one :class:`DemoRun`, so a
later issue adds its part (a filecast, a partition that heals, …) by appending a step
to :data:`STEPS` — each step gets the running lab and fleet and returns a line for the
user. Whatever happens (success, failure, Ctrl-C, SIGTERM) the lab is torn down; on
failure the logs are kept and their directory is printed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ._errors import ROOT_REASON, NetlabError, is_root
from ._lab import Lab
from .fleet import Fleet, peer_source

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_ROOT = 2
EXIT_INTERRUPTED = 130


@dataclass
class DemoRun:
    """What the steps share: settings, the lab and fleet once made, and results."""

    out: TextIO
    envoys: int = 3
    timeout_s: float = 60.0
    rate_mbit: float | None = None
    bin_dir: Path | None = None
    lab: Lab | None = None
    fleet_: Fleet | None = None
    discovery_s: dict[str, float] = field(default_factory=dict)

    @property
    def fleet(self) -> Fleet:
        if self.fleet_ is None:
            raise NetlabError("demo step ran before the lab was created")
        return self.fleet_

    def say(self, line: str = "") -> None:
        print(f"      {line}" if line else "", file=self.out, flush=True)


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[DemoRun], str | None]


def _create_lab(demo: DemoRun) -> str:
    demo.lab = Lab.create(demo.envoys, rate_mbit=demo.rate_mbit)
    demo.fleet_ = Fleet(demo.lab, bin_dir=demo.bin_dir)
    hosts = ", ".join(f"{h.name} {h.address}" for h in demo.lab.hosts)
    return f"lab {demo.lab.id}: {hosts}"


def _start_server(demo: DemoRun) -> str:
    seconds = demo.fleet.start_server(timeout_s=demo.timeout_s)
    return f"{demo.fleet.server_url} ready in {seconds:.2f} s"


def _enroll(demo: DemoRun) -> str:
    demo.fleet.enroll_all()
    return f"{demo.envoys} envoys enrolled with one join token"


def _start_envoys(demo: DemoRun) -> str:
    seeder, *others = demo.fleet.lab.envoys
    # the first envoy sits beside the server and seeds from its seed directory
    demo.fleet.start_envoy(
        seeder, {"seed_dirs": [str(demo.fleet.data_dir / "seed")], "checkin_interval_s": 2}
    )
    for host in others:
        demo.fleet.start_envoy(host, {"checkin_interval_s": 2})
    demo.fleet.wait_ready(timeout_s=demo.timeout_s)
    return f"daemons answering on their control sockets ({seeder.name} is the seeder)"


def _wait_discovery(demo: DemoRun) -> str:
    demo.discovery_s = demo.fleet.wait_until_confirmed(timeout_s=demo.timeout_s)
    slowest = max(demo.discovery_s.values(), default=0.0)
    return f"every envoy confirmed every other one (slowest after {slowest:.2f} s)"


def _summary(demo: DemoRun) -> None:
    fleet = demo.fleet
    names = {fleet.uuid(h): h.name for h in fleet.lab.envoys}
    for host in fleet.lab.envoys:
        took = demo.discovery_s.get(host.name)
        when = f"all peers after {took:.2f} s" if took is not None else "not timed"
        demo.say(f"{host.name}  {host.address}  uuid {fleet.uuid(host)}  ({when})")
        for peer in sorted(fleet.peers(host), key=lambda p: names.get(str(p.get("uuid")), "~")):
            demo.say("    " + _peer_line(peer, names))
    return None


def _peer_line(peer: dict[str, Any], names: dict[str, str]) -> str:
    uuid = str(peer.get("uuid"))
    addresses = peer.get("addresses") or []
    shown = ", ".join(str(a) for a in addresses) if isinstance(addresses, list) else addresses
    state = "mTLS-confirmed" if peer.get("confirmed") is True else "unconfirmed"
    return f"{names.get(uuid, '?'):<8} {uuid}  {shown}  {state}, found via {peer_source(peer)}"


DEMO_FILE_BYTES = 16 << 20


def _filecast(demo: DemoRun) -> str:
    """vigocli swarm filecast distribute, then watch etc/motd appear on every envoy."""
    import hashlib
    import json
    import os

    fleet = demo.fleet
    source = fleet.lab.root_dir / "demo-motd.bin"
    data = os.urandom(DEMO_FILE_BYTES)
    source.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    t0 = time.monotonic()
    out = json.loads(
        fleet.vigocli(
            "swarm", "filecast", "distribute", str(source), "--target", "etc/motd", "--json"
        )
    )
    demo.say(
        f"distributed {DEMO_FILE_BYTES >> 20} MiB as blob {out['blob']['sha256'][:16]}… "
        f"({out['blob']['chunks']} chunks) to target etc/motd"
    )
    arrived: dict[str, float] = {}

    def everywhere() -> bool:
        for host in fleet.lab.envoys:
            link = host.state_dir / "swarm" / "files" / "etc" / "motd"
            if (
                host.name not in arrived
                and link.is_symlink()
                and hashlib.sha256(link.read_bytes()).hexdigest() == want
            ):
                arrived[host.name] = time.monotonic() - t0
        return len(arrived) == len(fleet.lab.envoys)

    fleet.wait_for(everywhere, demo.timeout_s, "etc/motd on every envoy")
    names = {fleet.uuid(h): h.name for h in fleet.lab.envoys}
    seeder = fleet.lab.envoys[0].name
    from_neighbours = 0
    for host in fleet.lab.envoys:
        blobs = fleet.status(host).get("filecast", [])
        sources = {names.get(p, p[:8]): n for b in blobs for p, n in b["sources"].items()}
        how = ", ".join(f"{n} chunks from {who}" for who, n in sorted(sources.items()))
        from_neighbours += sum(n for who, n in sources.items() if who != seeder)
        demo.say(
            f"{host.name}: files/etc/motd verified after {arrived[host.name]:.2f} s"
            f"  ({how or 'seeded from the server seed dir'})"
        )
    return (
        f"every envoy holds a verified copy; {from_neighbours} chunks came from "
        f"envoys other than the seeder"
    )


#: The demo, in order. Later issues append their steps here.
STEPS: list[Step] = [
    Step("create the lab: one namespace per host on a private bridge", _create_lab),
    Step("start the server lite", _start_server),
    Step("enroll the envoys", _enroll),
    Step("start the envoy daemons", _start_envoys),
    Step("wait until each envoy has mTLS-confirmed the others", _wait_discovery),
    Step("summary", _summary),
    Step("filecast: distribute a file to the fleet", _filecast),
]


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so teardown still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(demo: DemoRun, steps: Sequence[Step] = STEPS) -> int:
    """Run the steps, always tear down, and return the process exit code."""
    out = demo.out
    if not is_root():
        print(
            f"netlab demo: {ROOT_REASON}: each demo host is its own network namespace.\n"
            "Run it as root (sudo ./run demo).",
            file=out,
        )
        return EXIT_NOT_ROOT
    code = EXIT_FAILED
    with _sigterm_as_interrupt():
        try:
            for number, step in enumerate(steps, 1):
                print(f"[{number}/{len(steps)}] {step.title}", file=out, flush=True)
                started = time.monotonic()
                detail = step.run(demo)
                took = time.monotonic() - started
                demo.say(f"{detail}  ({took:.2f} s)" if detail else f"({took:.2f} s)")
            code = EXIT_OK
        except KeyboardInterrupt:
            print("\ninterrupted: tearing the lab down", file=out)
            code = EXIT_INTERRUPTED
        except NetlabError as exc:
            print(f"\ndemo failed: {exc}", file=out)
        finally:
            _teardown(demo, keep_logs=code != EXIT_OK)
    print("demo ok" if code == EXIT_OK else f"demo exit status {code}", file=out)
    return code


def _teardown(demo: DemoRun, *, keep_logs: bool) -> None:
    if demo.lab is None:
        return
    demo.lab.down(remove_root=not keep_logs)
    kept = f"; logs kept in {demo.lab.root_dir / 'logs'}" if keep_logs else ""
    print(f"lab {demo.lab.id} removed{kept}", file=demo.out, flush=True)
