"""The seeder's side of gitback: scan each opted-in person's ``~/gitback/<project>/``
with a ``.gitback.yaml``; a ref change → a bundle (full or incremental) → a blob in our
store + a record → pushed to every allowed peer (``Publisher``).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import trio

from .. import http11
from ..blobstore import BlobError, BlobInfo
from ..peers import PeerView
from ..puddle import Person
from .gitcmd import GitError, fast_forwards
from .packer import Project, find_projects, pack_bundle, read_tips, refs_fingerprint
from .records import Record, RecordRejected, choose_kind, from_wire, parse_bundle_header
from .routes import RECORDS_PATH
from .state import GitbackState, Seeded, log

CHUNK_BYTES = 1 << 20


class Publisher(GitbackState):
    """Publishing: ``scan_once`` (run by the service's scanner) and what it calls."""

    async def scan_once(self) -> None:
        """Look at every opted-in person's projects once; publish what changed."""
        if not self.allowed:
            return
        for user in sorted(self.policy.users):
            person = await trio.to_thread.run_sync(self.people, user)
            if person is None:
                continue  # no such account on this envoy
            projects = await trio.to_thread.run_sync(find_projects, person)
            for project in projects:
                key = (user, project.name)
                if project.error or project.git_dir is None or project.config is None:
                    self._problem(key, project.error)
                    continue
                if not project.config.enabled:
                    continue
                try:
                    await self._publish_if_changed(user, person, project)
                except (GitError, RecordRejected, BlobError, OSError) as exc:
                    self._problem(key, str(exc))
                else:
                    self.problems.pop(key, None)

    async def _publish_if_changed(self, user: str, person: Person, project: Project) -> None:
        assert project.git_dir is not None and project.config is not None
        key = (user, project.name)
        git_dir = project.git_dir
        mark = await trio.to_thread.run_sync(refs_fingerprint, git_dir)
        last = self.seeded.get(key)
        if last is not None and self._fingerprints.get(key) == mark:
            return
        tips, head = await trio.to_thread.run_sync(read_tips, person, git_dir)
        if last is not None and (last.tips, last.head) == (tips, head):
            self._fingerprints[key] = mark
            return
        if not tips:
            return  # nothing committed yet
        moves = {}
        if last is not None:
            moves = {r: (last.tips[r], o) for r, o in tips.items() if last.tips.get(r, o) != o}
        ff = await trio.to_thread.run_sync(fast_forwards, git_dir, moves, person)
        kind = choose_kind(
            last.tips if last else None, tips, ff, last.chain if last else 0, self.config.max_chain
        )
        packed = await trio.to_thread.run_sync(
            self._pack, person, git_dir, user, project, tips, head, kind, last
        )
        if packed is None:
            return
        rec, info = packed
        self.seeded[key] = Seeded(
            rec.seq, dict(tips), head, 0 if rec.kind == "full" else (last.chain if last else 0) + 1
        )
        self._fingerprints[key] = mark
        self._hold(rec)
        self._prune(rec.repo, rec.seq)
        self.hostnames[self.me] = self.node.identity.hostname
        self._save()
        await trio.to_thread.run_sync(self._collect)
        if rec.kind == "full":
            self.stats.bundles_full += 1
        else:
            self.stats.bundles_incremental += 1
        log.info(
            "gitback: %s/%s seq %d: %s bundle of %d bytes, %d refs",
            user,
            project.name,
            rec.seq,
            rec.kind,
            info.size_bytes,
            len(rec.tips),
        )
        if self._nursery is not None:
            for peer in self.allowed_peers():
                self._nursery.start_soon(self._push_to, peer, [rec])

    def _pack(
        self,
        person: Person,
        git_dir: Path,
        user: str,
        project: Project,
        tips: dict[str, str],
        head: str,
        kind: str,
        last: Seeded | None,
    ) -> tuple[Record, BlobInfo] | None:
        """Blocking: the bundle (as the person) → a blob in our store → its record."""
        assert project.config is not None
        staging = self.root / "staging"
        staging.mkdir(mode=0o700, exist_ok=True)
        path = staging / f"{secrets.token_hex(8)}.bundle"
        try:
            exclude = sorted(set(last.tips.values())) if last and kind == "incremental" else []
            with open(path, "wb") as out:
                made = pack_bundle(person, git_dir, exclude, out)
            if not made:  # nothing new object-wise (a new ref at an old commit)
                kind, exclude = "full", []
                with open(path, "wb") as out:
                    pack_bundle(person, git_dir, [], out)
            size = path.stat().st_size
            if size > project.config.max_bundle_bytes:
                raise RecordRejected(
                    f"the {kind} bundle is {size} bytes, over max_bundle_bytes "
                    f"{project.config.max_bundle_bytes} (.gitback.yaml)"
                )
            with open(path, "rb") as f:
                header = parse_bundle_header(f.read(4 << 20))
            if any(tips.get(r) != o for r, o in header.refs.items()) or (
                kind == "full" and set(header.refs) != set(tips)
            ):
                return None  # the repo moved while we packed: look again next round
            info = self.store.add_file(path, CHUNK_BYTES)
        finally:
            path.unlink(missing_ok=True)
        seq = last.seq + 1 if last else 1
        rec = Record(
            seeder=self.node.identity.uuid,
            person=user,
            project=project.name,
            seq=seq,
            kind="full" if kind == "full" else "incremental",
            base_seq=last.seq if last and kind == "incremental" else 0,
            blob=info.sha256,
            size_bytes=info.size_bytes,
            chunk_bytes=info.chunk_bytes,
            chunks_digest=info.chunks_digest,
            tips=dict(tips),
            head=head,
            prerequisites=tuple(sorted(header.prerequisites)),
            created_unix=time.time(),
        )
        return from_wire(rec.to_wire()), info  # the receivers' own check, on our side too

    async def _push_to(self, peer: PeerView, recs: list[Record]) -> None:
        body = json.dumps({"records": [r.to_wire() for r in recs]}).encode()
        try:
            async with await self.node.dial(peer) as conn:
                resp = await conn.request("POST", RECORDS_PATH, body=body, max_body=1 << 20)
        except http11.ClientError as exc:
            log.debug("gitback: push to %s failed: %s", peer.uuid, exc)
            return
        if resp.status != 200:
            log.debug("gitback: %s refused our records (%d)", peer.uuid, resp.status)
