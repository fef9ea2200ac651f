"""Tearing labs down: by record, by staleness, or all of them.

Order matters for the state-file invariant (see ``_state``): stop the processes, delete
the namespaces, unmount what netlab mounted under the root dir (a tmpfs on a state dir;
left mounted, it would survive the lab and keep the root dir from being removed),
remove the root dir, and only then the state file — so a teardown that
dies half way leaves a state file behind and the next cleanup finishes the job.
Every step tolerates "already gone", which makes teardown idempotent.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from . import _commands as cmd
from ._errors import NetlabError
from ._proc import ProcessRef, is_alive, process_ref, run, stop
from ._state import RUN_DIR, LabRecord, Unreadable, is_stale, locked, read_records, remove_record
from ._topology import NS_PREFIX, default_root_dir, lab_id_of_namespace, lab_namespace_prefix

log = logging.getLogger(__name__)

#: How long daemons get to exit on SIGTERM during teardown before SIGKILL.
TEARDOWN_GRACE_S = 3.0

_OCTAL = re.compile(r"\\([0-7]{3})")


def list_namespaces() -> list[str]:
    """Names of all network namespaces known to ``ip netns`` (``/run/netns``)."""
    out = run(cmd.netns_list()).stdout
    # Lines look like "vgl-ab12cd-envoy1 (id: 3)" or just the name.
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def lab_namespaces() -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(NS_PREFIX)]


def namespace_pids(namespace: str) -> list[int]:
    """Pids of processes inside a namespace; [] when the namespace is already gone."""
    done = run(cmd.netns_pids(namespace), check=False)
    if done.returncode != 0:
        return []
    return [int(tok) for tok in done.stdout.split() if tok.isdigit()]


def kill_namespace_processes(
    namespaces: list[str], extra: list[ProcessRef], *, grace_s: float = TEARDOWN_GRACE_S
) -> None:
    """SIGTERM everything in the namespaces (and ``extra`` refs), SIGKILL what lingers.

    Signals go to single processes, not groups: a group may reach outside the lab.
    """
    refs = {ref for ref in extra if is_alive(ref)}
    for ns in namespaces:
        for pid in namespace_pids(ns):
            ref = process_ref(pid)
            if ref is not None:
                refs.add(ref)
    # `python -m netlab down` may itself run inside a lab namespace: do not kill ourselves.
    refs = {ref for ref in refs if ref.pid != os.getpid()}
    if refs:
        stop(sorted(refs, key=lambda r: r.pid), timeout_s=grace_s, group=False)


def delete_namespaces(namespaces: list[str]) -> None:
    present = set(list_namespaces())
    for ns in namespaces:
        if ns in present:
            run(cmd.netns_delete(ns))


def mount_points(mountinfo: str | None = None) -> list[Path]:
    """Mount points of this mount namespace (``/proc/self/mountinfo`` field 5), once per
    mount: a path mounted twice (stacked) appears twice."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:  # the kernel escapes space, tab, newline and \ as \ooo
            points.append(Path(_OCTAL.sub(lambda m: chr(int(m[1], 8)), fields[4])))
    return points


def mounts_to_remove(recorded: list[Path], root: Path, mounted: list[Path]) -> list[Path]:
    """Pure: the mounts among ``mounted`` that are recorded or lie below ``root``,
    deepest first; a stacked path is listed once per mount."""
    mine = [m for m in mounted if m in recorded or (m != root and m.is_relative_to(root))]
    return sorted(mine, key=lambda m: (-len(m.parts), str(m)))


def unmount_lab(record: LabRecord | Unreadable) -> None:
    """Unmount every filesystem netlab mounted for the lab. Raises NetlabError if one
    stays mounted (then the state file stays too, and the next cleanup tries again).

    The lab's processes are gone by now; a mount still busy (say, a user's shell sits in
    it) is detached lazily, which removes it from the tree at once."""
    if isinstance(record, LabRecord):
        recorded, root = record.mounts, record.root_dir
    else:
        recorded, root = [], default_root_dir(record.lab_id)
    targets = mounts_to_remove(recorded, root, mount_points())
    while targets:
        for path in dict.fromkeys(targets):  # the top of each stack, deepest path first
            if run(cmd.umount(str(path)), check=False).returncode != 0:
                log.warning("lab %s: %s is busy; detaching it lazily", record.lab_id, path)
                run(cmd.umount(str(path), lazy=True), check=False)
        left = mounts_to_remove(recorded, root, mount_points())
        if len(left) >= len(targets):
            raise NetlabError(f"lab {record.lab_id}: cannot unmount {', '.join(map(str, left))}")
        targets = left


def teardown(
    record: LabRecord | Unreadable,
    *,
    remove_root: bool | None = None,
    run_dir: Path = RUN_DIR,
    grace_s: float = TEARDOWN_GRACE_S,
) -> None:
    """Remove one lab completely. Idempotent."""
    prefix = lab_namespace_prefix(record.lab_id)
    # Also whatever namespaces carry the lab's prefix but are not in the record (a crash
    # between two writes): the prefix is the lab's true identity.
    namespaces = [ns for ns in lab_namespaces() if ns.startswith(prefix)]
    if isinstance(record, LabRecord):
        ordered = [ns for ns in record.namespaces if ns in namespaces]
        namespaces = ordered + [ns for ns in namespaces if ns not in ordered]
        extra = [p.ref for p in record.processes]
    else:
        log.warning(
            "lab %s: unreadable state file (%s); removing by name", record.lab_id, record.error
        )
        extra = []
    kill_namespace_processes(namespaces, extra, grace_s=grace_s)
    delete_namespaces(namespaces)
    unmount_lab(record)
    if isinstance(record, LabRecord):
        wanted = record.remove_root if remove_root is None else remove_root
        if wanted and record.root_dir.exists():
            shutil.rmtree(record.root_dir, ignore_errors=True)
    remove_record(record.lab_id, run_dir)


def remove_orphans(known: set[str]) -> list[str]:
    """Delete ``vgl-*`` namespaces whose lab has no state file. Caller holds the lock."""
    orphans = [ns for ns in lab_namespaces() if lab_id_of_namespace(ns) not in known]
    if orphans:
        log.warning("removing orphan namespaces: %s", ", ".join(orphans))
        kill_namespace_processes(orphans, [], grace_s=1.0)
        delete_namespaces(orphans)
    return orphans


def cleanup_stale(run_dir: Path = RUN_DIR) -> list[str]:
    """Remove labs whose owner process is dead, plus orphan namespaces.

    Returns the ids of the labs removed. Live and detached labs are left alone.
    """
    removed = []
    with locked(run_dir):
        records = read_records(run_dir)
        for record in records:
            if isinstance(record, Unreadable) or is_stale(record, is_alive):
                log.warning("removing stale lab %s", record.lab_id)
                teardown(record, run_dir=run_dir)
                removed.append(record.lab_id)
        known = {r.lab_id for r in records if r.lab_id not in removed}
        remove_orphans(known)
    return removed


def down_all(run_dir: Path = RUN_DIR) -> list[str]:
    """Remove every lab, live, detached or stale, and every orphan namespace."""
    removed = []
    with locked(run_dir):
        for record in read_records(run_dir):
            teardown(record, run_dir=run_dir)
            removed.append(record.lab_id)
        remove_orphans(set())
    return removed


def down_one(lab_id: str, *, remove_root: bool | None = None, run_dir: Path = RUN_DIR) -> bool:
    """Remove one lab by id; False if no state file names it (its namespaces, if any,
    are removed anyway)."""
    with locked(run_dir):
        for record in read_records(run_dir):
            if record.lab_id == lab_id:
                teardown(record, remove_root=remove_root, run_dir=run_dir)
                return True
        prefix = lab_namespace_prefix(lab_id)
        leftovers = [ns for ns in lab_namespaces() if ns.startswith(prefix)]
        kill_namespace_processes(leftovers, [], grace_s=1.0)
        delete_namespaces(leftovers)
    return False
