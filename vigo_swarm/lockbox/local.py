"""Step 1 of a lockbox pass: the person's local changes (``plan.local_changes``) made
into records — new content encrypted to the puddle's *public* key into the blob store,
each entry sealed the same way — so this works while the puddle is locked too."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Mapping

import trio

from ..blobstore import BlobError
from . import agefile, files, records
from .box import Box
from .core import LockboxCore
from .errors import LockboxError, SourceChanged
from .plan import Local, Stat, local_changes
from .records import BlobRef, Entry, Record

log = logging.getLogger(__name__)


class LocalChanges(LockboxCore):
    """Step 1: local changes into records."""

    # ----------------------------------------------------- step 1: local changes

    async def _record_local(
        self,
        box: Box,
        owner: files.Owner,
        local: dict[str, Local],
        disk: Mapping[str, Stat],
    ) -> int:
        public = bytes.fromhex(box.puddle_hex)
        plan = local_changes(local, disk)
        made = 0
        for up in plan.uploads:
            reused = box.records.get(up.reuse) if up.reuse else None
            try:
                if reused is not None and reused.blob is not None and self._complete(reused.blob):
                    ref, st = reused.blob, up.stat
                else:
                    ref, st = await trio.to_thread.run_sync(
                        self._encrypt_file, owner, up.path, public
                    )
            except (SourceChanged, FileNotFoundError):
                continue  # changing right now: the next pass records it
            except (LockboxError, OSError, BlobError) as exc:
                box.fail(f"{up.path}: {exc}")
                log.warning("lockbox: a local file could not be encrypted (%s)", type(exc).__name__)
                continue
            entry = self._entry(up.path, False, st, ref, up.supersedes)
            rec = await self._seal(public, entry, ref)
            box.records[rec.id] = rec
            local[up.path] = Local(rec.id, st)
            made += 1
        for gone in plan.deletions:
            entry = self._entry(gone.path, True, None, None, gone.supersedes)
            rec = await self._seal(public, entry, None)
            box.records[rec.id] = rec
            del local[gone.path]
            made += 1
        if made:
            self.stats.records_made += made
            log.info("lockbox: puddle %s…: %d new records", box.puddle_hex[:16], made)
        return made

    def _entry(
        self,
        path: str,
        deleted: bool,
        st: Stat | None,
        ref: BlobRef | None,
        supersedes: tuple[str, ...],
    ) -> Entry:
        return Entry(
            name=path,
            deleted=deleted,
            mode=st.mode if st else 0,
            size=st.size if st else 0,
            mtime_ns=st.mtime_ns if st else self.now_ns(),
            origin=str(self.node.identity.uuid),
            origin_name=self.node.identity.hostname,
            made_ns=self.now_ns(),
            blob=None if ref is None else ref.sha256,
            supersedes=tuple(sorted(set(supersedes))),
        )

    async def _seal(self, public: bytes, entry: Entry, ref: BlobRef | None) -> Record:
        payload = records.entry_payload(entry)

        def encrypt() -> bytes:
            out = io.BytesIO()
            agefile.encrypt(io.BytesIO(payload), len(payload), out, public)
            return out.getvalue()

        box = await trio.to_thread.run_sync(encrypt)
        return records.make_record(ref, entry.supersedes, box)

    def _encrypt_file(self, owner: files.Owner, path: str, public: bytes) -> tuple[BlobRef, Stat]:
        """Encrypt one of the person's files into the blob store (worker thread)."""
        tmp = self.root / "tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        out_path = tmp / f"enc-{uuid.uuid4().hex}"
        try:
            with files.open_source(owner, path) as (src, st):
                with open(out_path, "xb") as out:
                    agefile.encrypt(src, st.size, out, public)
                    agefile.fsync_file(out)
                after = files.stat_of(os.fstat(src.fileno()))
                if after != st:
                    raise SourceChanged("the file changed while it was encrypted")
            info = self.store.add_file(out_path, self.config.chunk_bytes)
        finally:
            out_path.unlink(missing_ok=True)
        return BlobRef.of(info), st
