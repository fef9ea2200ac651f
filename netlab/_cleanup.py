"""Tearing labs down: by record, by staleness, or all of them.

Order matters for the state-file invariant (see ``_state``): stop the processes, delete
the namespaces, remove the root dir, and only then the state file — so a teardown that
dies half way leaves a state file behind and the next cleanup finishes the job.
Every step tolerates "already gone", which makes teardown idempotent.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from . import _commands as cmd
from ._proc import ProcessRef, is_alive, process_ref, run, stop
from ._state import RUN_DIR, LabRecord, Unreadable, is_stale, locked, read_records, remove_record
from ._topology import NS_PREFIX, lab_id_of_namespace, lab_namespace_prefix

log = logging.getLogger(__name__)

#: How long daemons get to exit on SIGTERM during teardown before SIGKILL.
TEARDOWN_GRACE_S = 3.0


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
