"""The per-lab state file: what exists, who owns it, and what runs in it.

Invariant: a lab's state file is written *before* its first namespace is created and
removed *after* its last namespace is deleted. So a ``vgl-*`` namespace that no state
file names is always debris from a crash and may be deleted, and a state file whose
owner process is gone describes a lab nobody will tear down — unless it is detached
(``python -m netlab up``), which only ``down`` removes. Writers take an exclusive
``flock`` on ``<run_dir>/.lock`` so cleanup never races a lab being created.

File: ``/run/vigo-netlab/<labid>.json`` (``/run`` is a tmpfs: a reboot forgets labs
together with their namespaces).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import NetlabError
from ._proc import ProcessRef
from ._topology import Host, check_lab_id

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/vigo-netlab")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SpawnedProcess:
    host: str
    ref: ProcessRef
    argv: tuple[str, ...] = ()


@dataclass
class LabRecord:
    """Everything needed to find and tear down a lab from another process.

    ``owner`` is None for a detached lab. ``remove_root`` says whether ``down`` deletes
    ``root_dir`` (true when netlab chose the directory itself). ``mounts`` are the
    filesystems netlab mounted for the lab (a small tmpfs on a state dir): each is
    recorded before it is mounted, and teardown unmounts them.
    """

    lab_id: str
    owner: ProcessRef | None
    root_dir: Path
    remove_root: bool
    bridge_namespace: str
    hosts: tuple[Host, ...]
    processes: list[SpawnedProcess] = field(default_factory=list)
    created_at: float = 0.0
    mounts: list[Path] = field(default_factory=list)

    @property
    def detached(self) -> bool:
        return self.owner is None

    @property
    def namespaces(self) -> list[str]:
        """Host namespaces first, the bridge last (the order to delete them in)."""
        return [h.namespace for h in self.hosts] + [self.bridge_namespace]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "lab_id": self.lab_id,
            "owner_pid": 0 if self.owner is None else self.owner.pid,
            "owner_start_ticks": 0 if self.owner is None else self.owner.start_ticks,
            "detached": self.owner is None,
            "root_dir": str(self.root_dir),
            "remove_root": self.remove_root,
            "bridge_namespace": self.bridge_namespace,
            "namespaces": self.namespaces,
            "created_at": self.created_at,
            "mounts": [str(m) for m in self.mounts],
            "hosts": [
                {
                    "name": h.name,
                    "namespace": h.namespace,
                    "address": h.address,
                    "state_dir": str(h.state_dir),
                    "log_file": str(h.log_file),
                    "bridge_port": h.bridge_port,
                }
                for h in self.hosts
            ],
            "processes": [
                {"host": p.host, "pid": p.ref.pid, "start_ticks": p.ref.start_ticks, "argv": p.argv}
                for p in self.processes
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabRecord:
        """Parse a state file; raises ``NetlabError`` naming the problem."""
        try:
            if data["version"] != FORMAT_VERSION:
                raise NetlabError(f"unknown state file version {data['version']!r}")
            owner = None
            if not data["detached"]:
                owner = ProcessRef(int(data["owner_pid"]), int(data["owner_start_ticks"]))
            hosts = tuple(
                Host(
                    name=h["name"],
                    namespace=h["namespace"],
                    address=h["address"],
                    state_dir=Path(h["state_dir"]),
                    log_file=Path(h["log_file"]),
                    bridge_port=h["bridge_port"],
                )
                for h in data["hosts"]
            )
            processes = [
                SpawnedProcess(
                    p["host"],
                    ProcessRef(int(p["pid"]), int(p["start_ticks"])),
                    tuple(p.get("argv", ())),
                )
                for p in data["processes"]
            ]
            return cls(
                lab_id=check_lab_id(data["lab_id"]),
                owner=owner,
                root_dir=Path(data["root_dir"]),
                remove_root=bool(data["remove_root"]),
                bridge_namespace=data["bridge_namespace"],
                hosts=hosts,
                processes=processes,
                created_at=float(data.get("created_at", 0.0)),
                mounts=[Path(m) for m in data.get("mounts", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NetlabError(f"malformed lab state: {exc!r}") from exc


def is_stale(record: LabRecord, alive: Callable[[ProcessRef], bool]) -> bool:
    """A lab is stale when it has an owner and that owner is gone; detached labs never are."""
    return record.owner is not None and not alive(record.owner)


def state_path(lab_id: str, run_dir: Path = RUN_DIR) -> Path:
    return run_dir / f"{check_lab_id(lab_id)}.json"


def write_record(record: LabRecord, run_dir: Path = RUN_DIR) -> None:
    """Atomically (re)write a lab's state file: readers never see half a file."""
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = state_path(record.lab_id, run_dir)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_record(lab_id: str, run_dir: Path = RUN_DIR) -> None:
    state_path(lab_id, run_dir).unlink(missing_ok=True)


@dataclass(frozen=True)
class Unreadable:
    """A state file that could not be parsed; its lab id comes from the file name."""

    lab_id: str
    path: Path
    error: str


def read_records(run_dir: Path = RUN_DIR) -> list[LabRecord | Unreadable]:
    """All state files, oldest first. Unparseable ones are returned as ``Unreadable``
    so that cleanup can still remove the lab by its namespace prefix."""
    if not run_dir.is_dir():
        return []
    found: list[LabRecord | Unreadable] = []
    for path in sorted(run_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            found.append(LabRecord.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except FileNotFoundError:
            continue  # removed by a concurrent down
        except (NetlabError, ValueError, OSError) as exc:
            try:
                lab_id = check_lab_id(path.stem)
            except ValueError:
                log.warning("ignoring stray file %s", path)
                continue
            found.append(Unreadable(lab_id, path, str(exc)))
    return found


@contextmanager
def locked(run_dir: Path = RUN_DIR) -> Iterator[None]:
    """Hold the run dir's exclusive lock (creating the dir and lock file as needed)."""
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
