"""Applying peer index entries to a person's folder, under the person's lock: the
conflict decision (index.py) made against our own entry, the folder written
(folder.py), the index updated, conflict copies kept. A blob that is not here yet
leaves its entry not done (the puller retries it)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import trio

from ..blobstore import BlobStore
from ..materialize import TargetRefused
from .folder import FolderError, Stale
from .index import Action, Decision, Entry, Kind, decide
from .paths import depth
from .state import PersonSync
from .store import IndexStore

log = logging.getLogger(__name__)

APPLY_CONCURRENCY = 16  # files written (and fsynced) side by side

ScanLocked = Callable[[PersonSync, Iterable[str]], Awaitable[None]]
AfterChange = Callable[[PersonSync], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Applier:
    """Applies entries pulled from partners. ``scan_locked`` rescans paths (lock
    held) when the disk changed under an apply; ``after_change`` is told each time a
    batch of entries has been applied."""

    index: IndexStore
    store: BlobStore
    scan_locked: ScanLocked
    after_change: AfterChange

    async def apply_entries(
        self, ps: PersonSync, entries: list[Entry], inline: Mapping[str, bytes] | None = None
    ) -> list[bool]:
        """Apply entries under the person's lock: directories top-down, then files and
        links side by side (their fsyncs share the journal's commits), then deletions
        bottom-up. One notification round for the lot. ``inline``: small files' bytes
        received whole, by hash (written from memory, never put in the store)."""
        if not entries:
            return []
        dirs = sorted(
            (e for e in entries if e.kind is Kind.DIR and not e.deleted),
            key=lambda e: depth(e.path),
        )
        others = [e for e in entries if e.kind is not Kind.DIR and not e.deleted]
        gone = sorted((e for e in entries if e.deleted), key=lambda e: -depth(e.path))
        results: list[bool] = []
        async with ps.lock:
            for e in dirs:
                results.append(await self._apply_locked(ps, e, inline))
            limiter = trio.CapacityLimiter(APPLY_CONCURRENCY)

            async def one(e: Entry) -> None:
                async with limiter:
                    results.append(await self._apply_locked(ps, e, inline))

            async with trio.open_nursery() as nursery:
                for e in others:
                    nursery.start_soon(one, e)
            for e in gone:
                results.append(await self._apply_locked(ps, e, inline))
        await self.after_change(ps)
        return results

    async def _apply_locked(
        self, ps: PersonSync, remote: Entry, inline: Mapping[str, bytes] | None = None
    ) -> bool:
        """Apply one peer entry (``ps.lock`` held); False = not done (retry later).
        ``inline``: small files' bytes by hash (see ``apply_entries``)."""
        inline = inline or {}
        pid = ps.person.pid
        if ps.rules.ignored(remote.path):
            return True
        for _ in range(3):
            local = await trio.to_thread.run_sync(self.index.get, pid, remote.path)
            decision = decide(local[0] if local else None, remote)
            if decision.action is Action.SKIP:
                ps.pending.pop(remote.path, None)
                return True
            new = decision.entry
            assert new is not None
            if decision.conflict:
                ps.stats.conflicts += 1
                log.info("longdrawer: %s: conflict on %s", ps.person.login, remote.path)
            if decision.action is not Action.TAKE:
                if decision.keep_remote_as and not await self._keep_copy(
                    ps, replace(remote, path=decision.keep_remote_as), inline
                ):
                    return False
                await trio.to_thread.run_sync(
                    self.index.put, pid, [(new, local[1] if local else "")]
                )
                return True
            is_file = new.kind is Kind.FILE and not new.deleted
            data = inline.get(new.sha256) if is_file else None
            if is_file and data is None and self.store.blob_path(new.sha256) is None:
                return False
            try:
                sig = await trio.to_thread.run_sync(ps.folder.apply, decision, local, data)
            except Stale:
                await self.scan_locked(ps, [remote.path])
                continue
            except FolderError as exc:
                ps.stats.last_error = str(exc)
                log.warning("longdrawer: %s: %s", ps.person.login, exc)
                if isinstance(exc.__cause__, TargetRefused):
                    ps.stats.refused += 1
                    ps.pending.pop(remote.path, None)
                    return True  # never writable through a symlink: do not retry
                return False
            await trio.to_thread.run_sync(self.index.put, pid, [(new, sig)])
            ps.pending.pop(remote.path, None)
            ps.stats.applied += 1
            if new.kind is Kind.FILE and not new.deleted:
                ps.stats.files_written += 1
            if decision.copy_to:
                await self.scan_locked(ps, [decision.copy_to])
            return True
        return False

    async def _keep_copy(self, ps: PersonSync, loser: Entry, inline: Mapping[str, bytes]) -> bool:
        """Write a peer's losing version as a conflict copy (then index it as ours)."""
        data = inline.get(loser.sha256) if loser.kind is Kind.FILE else None
        if loser.kind is Kind.FILE and data is None and self.store.blob_path(loser.sha256) is None:
            return False
        try:
            take = Decision(Action.TAKE, loser)
            await trio.to_thread.run_sync(ps.folder.apply, take, None, data)
        except Stale:
            pass  # something is already there (the same copy, made earlier): indexed below
        except FolderError as exc:
            ps.stats.last_error = str(exc)
            log.warning("longdrawer: %s: %s", ps.person.login, exc)
            return False
        await self.scan_locked(ps, [loser.path])
        return True
