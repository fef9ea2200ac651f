"""Step 2 of a lockbox pass, while the puddle is unlocked here: the live records
decrypted, the view computed, and the person's files written or removed to match it
(``plan.remote_changes``)."""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import trio

from ..puddle import PuddleKey
from . import agefile, files, records
from .box import Box
from .core import LockboxCore
from .errors import BadRecord, DecryptFailed, LockboxError
from .plan import Local, Stat, remote_changes
from .records import Shown

log = logging.getLogger(__name__)


class RemoteChanges(LockboxCore):
    """Step 2: decrypt, view, write."""

    # ---------------------------------------------------- step 2: remote changes

    def _view(self, box: Box, key: PuddleKey) -> dict[str, Shown]:
        identity = key.openssh_private()
        live = records.live_ids(box.records)
        for rid in live - set(box.entries) - box.bad:
            rec = box.records[rid]
            try:
                out = io.BytesIO()
                agefile.decrypt(io.BytesIO(rec.box), out, identity)
                box.entries[rid] = records.entry_from_payload(out.getvalue(), rec)
            except (DecryptFailed, BadRecord) as exc:
                box.bad.add(rid)
                self.stats.records_refused += 1
                log.warning("lockbox: record %s refused: %s", rid[:12], type(exc).__name__)
        box.entries = {rid: e for rid, e in box.entries.items() if rid in live}
        shown = records.view(box.entries)
        box.shown = len(shown)
        box.conflicts = sum(1 for path, s in shown.items() if path != s.entry.name)
        return shown

    async def _materialize(
        self,
        box: Box,
        owner: files.Owner,
        key: PuddleKey,
        shown: dict[str, Shown],
        local: dict[str, Local],
        disk: Mapping[str, Stat],
    ) -> None:
        plan = remote_changes(shown, local, disk)
        identity = key.openssh_private()
        pending = 0
        for s in plan.write:
            assert s.entry.blob is not None
            blob = self.store.blob_path(s.entry.blob)
            if blob is None:
                pending += 1
                continue

            def fill(dst: BinaryIO, blob: Path = blob) -> None:
                with open(blob, "rb") as src:
                    agefile.decrypt(src, dst, identity)

            write = functools.partial(
                files.write_file,
                owner,
                s.path,
                mode=s.entry.mode,
                mtime_ns=s.entry.mtime_ns,
                expect=disk.get(s.path),
                fill=fill,
            )
            try:
                st = await trio.to_thread.run_sync(write)
            except DecryptFailed:
                self.stats.decrypt_failures += 1
                box.fail(f"{s.path}: its ciphertext failed to decrypt; the file was left as it was")
                log.warning(
                    "lockbox: blob %s of record %s failed to decrypt (altered or truncated): "
                    "rejected, plaintext untouched; fetching it again",
                    s.entry.blob[:12],
                    s.record[:12],
                )
                await trio.to_thread.run_sync(self.store.delete, s.entry.blob)
                continue
            except (LockboxError, OSError) as exc:
                box.fail(f"{s.path}: {exc}")
                log.warning("lockbox: a file could not be written (%s)", type(exc).__name__)
                continue
            if st is not None:
                local[s.path] = Local(s.record, st)
                self.stats.files_written += 1
        for path in plan.remove:
            try:
                removed = await trio.to_thread.run_sync(
                    files.remove_file, owner, path, local[path].stat
                )
            except (LockboxError, OSError) as exc:
                box.fail(f"{path}: {exc}")
                continue
            if removed:
                del local[path]
                self.stats.files_removed += 1
        box.pending_writes = pending
