"""Vigo on a lab: the server lite, join tokens, enrollment and envoy daemons.

Deliberately thin: each method is one invocation of a console script from the same venv
as this interpreter, run inside a lab namespace, following the command contract below.
It holds no Vigo logic, so when a command changes only this file follows.

    vigo-server-lite serve --data-dir D --listen ADDR:8443 --advertise ADDR --ready-file F
    vigocli --server URL --ca-file D/ca/ca.pem --admin-token-file D/admin.token \\
            token create --ttl-s 3600 --max-uses N --json            -> {"token": …}
    vigo enroll --server URL --token T --state-dir S --hostname NAME
    vigo agent run --state-dir S                    (optional S/agent.yaml mapping)
    vigo swarm status --state-dir S --json          -> {"uuid": …}
    vigo swarm peers --state-dir S --json           -> [{"uuid", "confirmed", "addresses", …}]
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ._errors import NetlabError
from ._lab import HostRef, Lab
from ._topology import Host
from ._wait import DEFAULT_INTERVAL_S
from ._wait import wait_for as _wait_for

T = TypeVar("T")

SERVER_PORT = 8443
AGENT_CONFIG = "agent.yaml"


def console_script(name: str, bin_dir: Path | None = None) -> Path:
    """A console script of the running venv (``vigo``, ``vigocli``, ``vigo-server-lite``)."""
    return (bin_dir or Path(sys.executable).parent) / name


def peer_source(peer: Mapping[str, Any]) -> str:
    """How a peer was found, from whichever key the daemon reports it under."""
    for key in ("sources", "source", "via", "found_via", "discovered_by"):
        value = peer.get(key)
        if isinstance(value, list | tuple):
            return "+".join(str(v) for v in value) or "?"
        if value:
            return str(value)
    return "?"


class _Progress:
    """Which envoys still miss which confirmed peers; truthy when none does.

    Its repr is what a ``WaitTimeout`` reports as "last seen", so it names the gaps.
    """

    def __init__(self, missing: dict[str, list[str]]) -> None:
        self.missing = missing

    def __bool__(self) -> bool:
        return not any(self.missing.values())

    def __repr__(self) -> str:
        gaps = [f"{h} lacks {', '.join(m)}" for h, m in self.missing.items() if m]
        return "; ".join(gaps) or "all confirmed"


class Fleet:
    """The server and envoys of one :class:`Lab`.

    ``agent_config`` is written as every envoy's ``agent.yaml`` (merged under the
    per-envoy ``config`` given to :meth:`start_envoy`). ``bin_dir`` overrides where the
    console scripts are found (tests point it at stand-ins).
    """

    def __init__(
        self,
        lab: Lab,
        *,
        agent_config: Mapping[str, object] | None = None,
        bin_dir: Path | None = None,
        command_timeout_s: float = 30.0,
    ) -> None:
        self.lab = lab
        self.agent_config = dict(agent_config or {})
        self.bin_dir = bin_dir
        self.command_timeout_s = command_timeout_s
        self.started_at: dict[str, float] = {}
        self._uuids: dict[str, str] = {}

    # -- server ----------------------------------------------------------------------

    @property
    def server(self) -> Host:
        if self.lab.server is None:
            raise NetlabError(f"lab {self.lab.id} was created without a server host")
        return self.lab.server

    @property
    def server_url(self) -> str:
        return f"https://{self.server.address}:{SERVER_PORT}"

    @property
    def data_dir(self) -> Path:
        return self.server.state_dir

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca" / "ca.pem"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def ready_file(self) -> Path:
        return self.lab.root_dir / "server.ready"

    def start_server(self, timeout_s: float = 30.0) -> float:
        """Start the server lite and wait for its ready file; returns seconds to ready."""
        self.ready_file.unlink(missing_ok=True)
        started = time.monotonic()
        self.lab.spawn(
            self.server,
            [
                str(self._script("vigo-server-lite")), "serve",
                "--data-dir", str(self.data_dir),
                "--listen", f"{self.server.address}:{SERVER_PORT}",
                "--advertise", self.server.address,
                "--ready-file", str(self.ready_file),
            ],
        )  # fmt: skip
        self.wait_for(
            lambda: self.ready_file.exists() and self.ca_file.exists(),
            timeout_s,
            "the server's ready file and CA",
            abort=self._exited(self.server, "vigo-server-lite"),
        )
        return time.monotonic() - started

    def stop_server(self, timeout_s: float = 5.0) -> float:
        return self.lab.kill(self.server, timeout_s=timeout_s)

    def vigocli_argv(self, *args: str) -> list[str]:
        """`vigocli` with this lab's server, CA and admin token, then ``args``."""
        return [
            str(self._script("vigocli")),
            "--server", self.server_url,
            "--ca-file", str(self.ca_file),
            "--admin-token-file", str(self.admin_token_file),
            *args,
        ]  # fmt: skip

    def vigocli(self, *args: str, timeout_s: float = 120.0) -> str:
        """Run `vigocli ARGS` on the server host; returns its stdout (raises on failure)."""
        return self.lab.exec(self.server, self.vigocli_argv(*args), timeout_s=timeout_s).stdout

    def create_token(self, max_uses: int, *, ttl_s: int = 3600) -> str:
        out = self._run_json(
            self.server,
            self.vigocli_argv(
                "token", "create", "--ttl-s", str(ttl_s), "--max-uses", str(max_uses), "--json"
            ),
        )
        if not isinstance(out, dict) or not isinstance(out.get("token"), str):
            raise NetlabError(f"vigocli token create: no 'token' in {out!r}")
        return str(out["token"])

    # -- envoys ----------------------------------------------------------------------

    def enroll(self, host: HostRef, token: str | None = None) -> None:
        """Enroll one envoy (with a fresh single-use token unless one is given)."""
        h = self.lab.host(host)
        token = token or self.create_token(1)
        self.lab.exec(
            h,
            [
                str(self._script("vigo")), "enroll",
                "--server", self.server_url, "--token", token,
                "--state-dir", str(h.state_dir), "--hostname", h.name,
            ],
            timeout_s=self.command_timeout_s,
        )  # fmt: skip

    def enroll_all(self, hosts: Iterable[HostRef] | None = None) -> None:
        """Enroll several envoys (default: all) with one multi-use token."""
        targets = self._hosts(hosts)
        token = self.create_token(len(targets))
        for h in targets:
            self.enroll(h, token)

    def write_agent_config(self, host: HostRef, config: Mapping[str, object] | None) -> Path:
        """Write ``agent.yaml`` (fleet-wide settings overlaid by ``config``)."""
        h = self.lab.host(host)
        merged = {**self.agent_config, **(config or {})}
        path = h.state_dir / AGENT_CONFIG
        path.write_text(yaml.safe_dump(merged, sort_keys=True), encoding="utf-8")
        return path

    def start_envoy(
        self,
        host: HostRef,
        config: Mapping[str, object] | None = None,
        *,
        state_size_mib: int | None = None,
    ) -> int:
        """Start the envoy daemon; returns its pid. ``agent.yaml`` is written first when
        there is any configuration to put in it. With ``state_size_mib`` the state dir
        is first moved onto a tmpfs of that size (a small disk; see ``Lab.mount_tmpfs``;
        kept across restarts, resized with ``Lab.resize_tmpfs``)."""
        h = self.lab.host(host)
        if state_size_mib is not None and h.state_dir not in self.lab.mounts:
            self.lab.mount_tmpfs(h, state_size_mib)
        if self.agent_config or config:
            self.write_agent_config(h, config)
        self.started_at[h.name] = time.monotonic()
        argv = [str(self._script("vigo")), "agent", "run", "--state-dir", str(h.state_dir)]
        return self.lab.spawn(h, argv)

    def stop_envoy(self, host: HostRef, timeout_s: float = 5.0) -> float:
        """SIGTERM the daemon; returns seconds until it exited (SIGKILL after timeout)."""
        return self.lab.kill(host, timeout_s=timeout_s)

    def status(self, host: HostRef) -> dict[str, Any]:
        h = self.lab.host(host)
        out = self._run_json(h, self._swarm("status", h))
        if not isinstance(out, dict) or not isinstance(out.get("uuid"), str):
            raise NetlabError(f"{h.name}: vigo swarm status: no 'uuid' in {out!r}")
        self._uuids[h.name] = out["uuid"]
        return out

    def uuid(self, host: HostRef) -> str:
        name = self.lab.host(host).name
        return self._uuids.get(name) or str(self.status(name)["uuid"])

    def peers(self, host: HostRef) -> list[dict[str, Any]]:
        h = self.lab.host(host)
        out = self._run_json(h, self._swarm("peers", h))
        if not isinstance(out, list) or not all(isinstance(p, dict) for p in out):
            raise NetlabError(f"{h.name}: vigo swarm peers: expected a list of objects: {out!r}")
        return out

    def confirmed_uuids(self, host: HostRef) -> set[str]:
        return {str(p.get("uuid")) for p in self.peers(host) if p.get("confirmed") is True}

    # -- waiting ---------------------------------------------------------------------

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout_s: float,
        what: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        abort: Callable[[], str | None] | None = None,
    ) -> T:
        """Poll ``predicate`` until truthy (see :func:`netlab.wait_for`)."""
        return _wait_for(predicate, timeout_s, what, interval_s=interval_s, abort=abort)

    def wait_ready(self, hosts: Iterable[HostRef] | None = None, timeout_s: float = 30.0) -> None:
        """Wait until each envoy daemon answers ``vigo swarm status`` (and learn UUIDs)."""
        for h in self._hosts(hosts):
            self.wait_for(
                functools.partial(self.status, h),
                timeout_s,
                f"{h.name}'s daemon to answer 'vigo swarm status'",
                abort=self._exited(h, "vigo agent run"),
            )

    def wait_until_confirmed(
        self, hosts: Iterable[HostRef] | None = None, timeout_s: float = 30.0
    ) -> dict[str, float]:
        """Wait until every envoy lists every other one as an mTLS-confirmed peer.

        Returns, per envoy, the seconds from its :meth:`start_envoy` to the first poll
        that showed all its peers confirmed. Polls query the envoys in parallel; the
        times are as precise as one poll round (one ``vigo`` start-up, a few 100 ms).
        """
        targets = self._hosts(hosts)
        self.wait_ready(targets, timeout_s)
        want = {h.name: self.uuid(h) for h in targets}
        found_at: dict[str, float] = {}

        def poll() -> _Progress:
            pending = [h for h in targets if h.name not in found_at]
            with ThreadPoolExecutor(max_workers=max(1, len(pending))) as pool:
                results = list(pool.map(self._confirmed_or_empty, pending))
            now = time.monotonic()
            missing: dict[str, list[str]] = {}
            for h, confirmed in zip(pending, results, strict=True):
                lacks = [n for n, u in want.items() if n != h.name and u not in confirmed]
                if lacks:
                    missing[h.name] = lacks
                else:
                    found_at[h.name] = now - self.started_at.get(h.name, now)
            return _Progress(missing)

        self.wait_for(
            poll,
            timeout_s,
            f"{len(targets)} envoys to confirm each other",
            abort=self._any_exited(targets),
        )
        return found_at

    # -- helpers ---------------------------------------------------------------------

    def _script(self, name: str) -> Path:
        return console_script(name, self.bin_dir)

    def _swarm(self, verb: str, h: Host) -> list[str]:
        return [str(self._script("vigo")), "swarm", verb, "--state-dir", str(h.state_dir), "--json"]

    def _run_json(self, h: Host, argv: list[str]) -> object:
        done = self.lab.exec(h, argv, timeout_s=self.command_timeout_s)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            command = " ".join([Path(argv[0]).name, *argv[1:]])
            raise NetlabError(f"{h.name}: {command}: not JSON: {done.stdout[:200]!r}") from exc

    def _confirmed_or_empty(self, h: Host) -> set[str]:
        try:
            return self.confirmed_uuids(h)
        except NetlabError:
            return set()

    def _hosts(self, hosts: Iterable[HostRef] | None) -> list[Host]:
        if hosts is None:
            return list(self.lab.envoys)
        return [self.lab.host(h) for h in hosts]

    def _exited(self, h: Host, what: str) -> Callable[[], str | None]:
        def check() -> str | None:
            if self.lab.is_running(h):
                return None
            return f"{what} on {h.name} exited; log {h.log_file}:\n{self.lab.log_tail(h)}"

        return check

    def _any_exited(self, hosts: list[Host]) -> Callable[[], str | None]:
        checks = [self._exited(h, "vigo agent run") for h in hosts]

        def check() -> str | None:
            return next((r for r in (c() for c in checks) if r is not None), None)

        return check
