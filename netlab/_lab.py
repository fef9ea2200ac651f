"""The lab: hosts as network namespaces on a private bridge, and what you can do to them.

A ``Lab`` owns its namespaces from ``create`` until ``down``. It is synchronous and
subprocess-based on purpose: it runs next to (not inside) the trio code under test, and
every operation is one or a few ``ip``/``tc``/``nft`` commands built by ``_commands``.

Cleanup is layered so that no run leaves debris: ``with Lab.create(...)`` downs the lab
on exit, an ``atexit`` hook downs it if the process ends without that, and when even
that never ran (SIGKILL, a crash) the next ``Lab.create`` finds the state file of a lab
whose owner is dead and removes it (``cleanup_stale``).
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from . import _cleanup
from . import _commands as cmd
from ._errors import CommandError, NetlabError, require_root
from ._proc import DEFAULT_TIMEOUT_S, ProcessRef, is_alive, process_ref, run, stop
from ._state import RUN_DIR, LabRecord, SpawnedProcess, locked, read_records, write_record
from ._topology import (
    HOST_IFACE,
    SERVER,
    Host,
    bridge_namespace,
    default_root_dir,
    lab_id_of_namespace,
    new_lab_id,
    plan_hosts,
)

log = logging.getLogger(__name__)

HostRef = Host | str


class Lab:
    """A running lab. Make one with :meth:`create` (or :meth:`attach` to a running one)."""

    def __init__(self, record: LabRecord, *, owned: bool, run_dir: Path = RUN_DIR) -> None:
        self._record = record
        self._run_dir = run_dir
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._is_down = False
        # Only the creating process tears down at exit: not a fork of it, not an attacher.
        self._owner_pid = os.getpid() if owned else None
        if owned:
            atexit.register(self._atexit)

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        envoys: int,
        *,
        rate_mbit: float | None = None,
        with_server: bool = True,
        root_dir: Path | None = None,
    ) -> Lab:
        """Create a lab with ``envoys`` envoy hosts (and a ``server`` host).

        Stale labs of crashed runs are removed first. ``root_dir`` (default
        ``/tmp/vgl-<labid>``, removed by ``down``) holds one state dir per host and
        ``logs/``; a caller-provided ``root_dir`` is kept by ``down`` so logs survive.
        """
        require_root("netlab")
        _cleanup.cleanup_stale(RUN_DIR)
        with locked(RUN_DIR):
            lab_id = _fresh_lab_id(root_dir is None)
            root = root_dir if root_dir is not None else default_root_dir(lab_id)
            hosts = plan_hosts(lab_id, envoys, with_server=with_server, root_dir=root)
            owner = process_ref(os.getpid())
            assert owner is not None  # we are running
            record = LabRecord(
                lab_id=lab_id,
                owner=owner,
                root_dir=root,
                remove_root=root_dir is None,
                bridge_namespace=bridge_namespace(lab_id),
                hosts=hosts,
                created_at=time.time(),
            )
            write_record(record)  # before any namespace exists: see _state's invariant
        lab = cls(record, owned=True)
        try:
            lab._build(rate_mbit)
        except BaseException:
            lab.down()
            raise
        log.info("lab %s up: %s", lab_id, ", ".join(f"{h.name}={h.address}" for h in hosts))
        return lab

    def _build(self, rate_mbit: float | None) -> None:
        rec = self._record
        rec.root_dir.mkdir(mode=0o755, parents=True, exist_ok=not rec.remove_root)
        (rec.root_dir / "logs").mkdir(mode=0o755, exist_ok=True)
        for host in rec.hosts:
            host.state_dir.mkdir(mode=0o755, exist_ok=True)
        run(cmd.netns_add(rec.bridge_namespace))
        for argv in cmd.bridge_setup(rec.bridge_namespace):
            run(argv)
        for host in rec.hosts:
            run(cmd.netns_add(host.namespace))
            for argv in cmd.host_setup(host, rec.bridge_namespace):
                run(argv)
        if rate_mbit is not None:
            for host in rec.hosts:
                self.set_rate(host, rate_mbit)

    @classmethod
    def attach(cls, lab_id: str | None = None) -> Lab:
        """A handle on a lab made by another process (for ``netlab exec``/``down``).

        Without ``lab_id`` there must be exactly one lab. The handle does not own the lab:
        nothing is torn down when this process exits.
        """
        records = [r for r in read_records(RUN_DIR) if isinstance(r, LabRecord)]
        if lab_id is not None:
            records = [r for r in records if r.lab_id == lab_id]
            if not records:
                raise NetlabError(f"no lab {lab_id!r} (see: python -m netlab list)")
        if not records:
            raise NetlabError("no lab is running (start one with: python -m netlab up)")
        if len(records) > 1:
            ids = ", ".join(r.lab_id for r in records)
            raise NetlabError(f"several labs are running ({ids}): choose one with --lab ID")
        return cls(records[0], owned=False)

    @staticmethod
    def cleanup_stale() -> list[str]:
        """Remove labs whose owner process died, and orphan ``vgl-*`` namespaces."""
        require_root("netlab cleanup")
        return _cleanup.cleanup_stale(RUN_DIR)

    @staticmethod
    def down_all() -> list[str]:
        """Remove every lab on this machine (including live and detached ones)."""
        require_root("netlab down")
        return _cleanup.down_all(RUN_DIR)

    def down(self, *, remove_root: bool | None = None) -> None:
        """Kill every process in the lab's namespaces, delete them, remove the state file
        and (if netlab chose it, or ``remove_root``) the root dir. Idempotent."""
        if self._is_down:
            return
        with locked(self._run_dir):
            _cleanup.teardown(self._record, remove_root=remove_root, run_dir=self._run_dir)
        for child in self._children.values():
            child.poll()
        self._children.clear()
        self._is_down = True
        atexit.unregister(self._atexit)
        log.info("lab %s down", self.id)

    def detach(self) -> None:
        """Leave the lab running after this process exits; only ``down`` removes it."""
        self._record.owner = None
        write_record(self._record, self._run_dir)
        self._owner_pid = None
        self._children.clear()
        atexit.unregister(self._atexit)

    def _atexit(self) -> None:
        if self._owner_pid == os.getpid() and not self._is_down:
            try:
                self.down()
            except Exception:  # an exit hook must not mask the real exit reason
                log.exception("lab %s: cleanup at exit failed", self.id)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- hosts -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._record.lab_id

    @property
    def root_dir(self) -> Path:
        return self._record.root_dir

    @property
    def bridge_namespace(self) -> str:
        return self._record.bridge_namespace

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self._record.hosts

    @property
    def server(self) -> Host | None:
        return next((h for h in self.hosts if h.name == SERVER), None)

    @property
    def envoys(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.name != SERVER)

    @property
    def detached(self) -> bool:
        return self._record.detached

    @property
    def mounts(self) -> tuple[Path, ...]:
        """The state dirs netlab put on a tmpfs (``mount_tmpfs``)."""
        return tuple(self._record.mounts)

    def host(self, host: HostRef) -> Host:
        name = host.name if isinstance(host, Host) else host
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise NetlabError(f"lab {self.id} has no host {name!r} (hosts: {known})")

    def log_tail(self, host: HostRef, lines: int = 20) -> str:
        """The last lines of a host's log (for error messages)."""
        try:
            text = self.host(host).log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- processes -------------------------------------------------------------------

    def exec(
        self,
        host: HostRef,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        user: str | int | None = None,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in the host's namespace and capture its output.

        ``env`` is added to this process's environment; ``user`` drops root after
        entering the namespace. Raises ``CommandError`` on timeout or (``check``) failure.
        """
        h = self.host(host)
        full = cmd.netns_exec(h.namespace, argv, user_prefix=_user_prefix(user))
        return run(full, check=check, timeout_s=timeout_s, env=_env(env), input_text=input_text)

    def spawn(
        self,
        host: HostRef,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | int | None = None,
    ) -> int:
        """Start a long-running process in the host's namespace and return its pid.

        It gets its own session (so signals reach its children, and a Ctrl-C aimed at
        us does not hit it first); stdout and stderr are appended to the host's log.
        """
        self._require_up()
        h = self.host(host)
        full = cmd.netns_exec(h.namespace, argv, user_prefix=_user_prefix(user))
        h.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(h.log_file, "ab") as logf:
            stamp = time.strftime("%H:%M:%S")
            logf.write(f"--- {stamp} netlab spawn: {' '.join(argv)}\n".encode())
            logf.flush()
            try:
                child = subprocess.Popen(
                    full,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=_env(env),
                )
            except OSError as exc:
                raise CommandError(full, None, str(exc), reason="could not start") from exc
        # Our unreaped child cannot vanish from /proc, so its ref is always readable.
        ref = process_ref(child.pid) or ProcessRef(child.pid, -1)
        self._children[child.pid] = child
        self._record.processes.append(SpawnedProcess(h.name, ref, tuple(argv)))
        write_record(self._record, self._run_dir)
        return child.pid

    def pids(self, host: HostRef) -> list[int]:
        """Pids of the host's spawned processes that are still running."""
        name = self.host(host).name
        return [p.ref.pid for p in self._record.processes if p.host == name and is_alive(p.ref)]

    def is_running(self, host: HostRef) -> bool:
        return bool(self.pids(host))

    def kill(self, host: HostRef, sig: int = signal.SIGTERM, timeout_s: float = 5.0) -> float:
        """Signal the host's spawned processes (whole process groups) and wait for them.

        Escalates to SIGKILL after ``timeout_s``. Returns the seconds until all exited
        (0.0 if none was running) — a daemon's shutdown time, as a test wants to check.
        """
        name = self.host(host).name
        mine = [p for p in self._record.processes if p.host == name]
        reap = [self._children[p.ref.pid] for p in mine if p.ref.pid in self._children]
        elapsed = stop([p.ref for p in mine], sig=sig, timeout_s=timeout_s, reap=reap)
        for p in mine:
            child = self._children.pop(p.ref.pid, None)
            if child is not None:
                child.poll()
        self._record.processes = [p for p in self._record.processes if p.host != name]
        write_record(self._record, self._run_dir)
        return elapsed

    def kill9(self, host: HostRef) -> float:
        """SIGKILL the host's processes: a crash, no chance to clean up."""
        return self.kill(host, signal.SIGKILL)

    # -- small state filesystems -----------------------------------------------------

    def mount_tmpfs(self, host: HostRef, size_mib: int) -> Path:
        """Put the host's state dir on a tmpfs of ``size_mib`` MiB (a disk that fills up).

        Whatever the state dir holds already (an enrolled identity) is moved onto the
        tmpfs. Call it while the host's daemon is stopped. The mount is recorded before
        it is made, and ``down`` (or stale-lab cleanup) unmounts it. Returns the path.
        """
        self._require_up()
        h = self.host(host)
        path = h.state_dir
        if path in self._record.mounts:
            raise NetlabError(f"{h.name}: {path} is already a tmpfs (resize it instead)")
        if self.is_running(h):
            raise NetlabError(f"{h.name}: stop its processes before mounting over {path}")
        aside = path.with_name(f".{path.name}.before-tmpfs")
        path.rename(aside)
        path.mkdir(mode=0o755)
        self._record.mounts.append(path)
        write_record(self._record, self._run_dir)  # recorded before it exists
        try:
            run(cmd.mount_tmpfs(str(path), size_mib))
        except NetlabError:
            self._record.mounts.remove(path)
            write_record(self._record, self._run_dir)
            path.rmdir()
            aside.rename(path)
            raise
        try:
            shutil.copytree(aside, path, symlinks=True, dirs_exist_ok=True)
        except (OSError, shutil.Error) as exc:  # kept in `aside` (down removes the root)
            raise NetlabError(
                f"{h.name}: cannot copy {aside} onto a {size_mib} MiB tmpfs: {exc}"
            ) from exc
        shutil.rmtree(aside)
        return path

    def resize_tmpfs(self, host: HostRef, size_mib: int) -> None:
        """Grow (free space on) or shrink a state dir tmpfs in place; files stay."""
        h = self.host(host)
        if h.state_dir not in self._record.mounts:
            raise NetlabError(f"{h.name}: {h.state_dir} is not a netlab tmpfs")
        run(cmd.remount_tmpfs(str(h.state_dir), size_mib))

    # -- network conditions ----------------------------------------------------------

    def set_rate(self, host: HostRef, rate_mbit: float | None) -> None:
        """Limit the host's bandwidth in both directions (tc tbf), or lift it (None)."""
        h = self.host(host)
        for argv in cmd.rate_commands(h, self.bridge_namespace, rate_mbit):
            done = run(argv, check=False)
            absent = any(m in done.stderr for m in cmd.TBF_ABSENT_MARKERS)
            if done.returncode != 0 and not (rate_mbit is None and absent):
                raise CommandError(argv, done.returncode, done.stderr, done.stdout)

    def qdisc(self, host: HostRef) -> tuple[str, str]:
        """``tc qdisc show`` of the host's ``eth0`` and of its bridge port (for checks)."""
        h = self.host(host)
        inside = run(cmd.qdisc_show(h.namespace, HOST_IFACE)).stdout
        bridge = run(cmd.qdisc_show(self.bridge_namespace, h.bridge_port)).stdout
        return inside, bridge

    def cut(self, host: HostRef) -> None:
        """Unplug the host: an nft table in its namespace drops all non-loopback traffic.
        Its processes keep running and its links and routes stay as they were."""
        self._nft(host, cmd.nft_cut())

    def restore(self, host: HostRef) -> None:
        self._nft(host, cmd.nft_delete_table(cmd.CUT_TABLE))

    def block(self, a: HostRef, b: HostRef) -> None:
        """Drop all traffic between ``a`` and ``b`` (both directions, in both namespaces);
        each keeps talking to everyone else."""
        ha, hb = self._pair(a, b)
        self._nft(ha, cmd.nft_block(hb.name, hb.address))
        self._nft(hb, cmd.nft_block(ha.name, ha.address))

    def unblock(self, a: HostRef, b: HostRef) -> None:
        ha, hb = self._pair(a, b)
        self._nft(ha, cmd.nft_delete_table(cmd.block_table(hb.name)))
        self._nft(hb, cmd.nft_delete_table(cmd.block_table(ha.name)))

    def drop_multicast(self, host: HostRef) -> None:
        """Drop 224.0.0.0/4 in and out of the host: discovery must use other paths."""
        self._nft(host, cmd.nft_drop_multicast())

    def allow_multicast(self, host: HostRef) -> None:
        self._nft(host, cmd.nft_delete_table(cmd.MCAST_TABLE))

    def nft_ruleset(self, host: HostRef) -> str:
        return self.exec(host, ["nft", "list", "ruleset"]).stdout

    def _nft(self, host: HostRef, script: str) -> None:
        self._require_up()
        run(cmd.nft_apply(self.host(host).namespace), input_text=script)

    def _pair(self, a: HostRef, b: HostRef) -> tuple[Host, Host]:
        ha, hb = self.host(a), self.host(b)
        if ha.name == hb.name:
            raise NetlabError(f"cannot block {ha.name} from itself")
        return ha, hb

    def _require_up(self) -> None:
        if self._is_down:
            raise NetlabError(f"lab {self.id} is down")

    def __repr__(self) -> str:
        return f"<Lab {self.id} hosts={[h.name for h in self.hosts]}>"


def _fresh_lab_id(check_default_root: bool) -> str:
    """A lab id used by no state file, namespace or (default) root dir."""
    taken = {r.lab_id for r in read_records(RUN_DIR)}
    taken.update(filter(None, map(lab_id_of_namespace, _cleanup.lab_namespaces())))
    for _ in range(100):
        lab_id = new_lab_id()
        if lab_id not in taken and not (check_default_root and default_root_dir(lab_id).exists()):
            return lab_id
    raise NetlabError("could not pick an unused lab id")  # pragma: no cover


def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if extra is None else {**os.environ, **extra}


def _user_prefix(user: str | int | None) -> list[str]:
    if user is None:
        return []
    try:
        pw = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError as exc:
        raise NetlabError(f"no such user: {user!r}") from exc
    return cmd.as_user(str(pw.pw_uid), str(pw.pw_gid))
