"""Gitback on an envoy: publish people's repositories as bundles, keep mirrors of peers'.

    GitbackService
    ├── scanner   (an allowed envoy) each opted-in person's ~/gitback/<project>/ with a
    │             .gitback.yaml: a ref change → a bundle (full or incremental) → a blob
    │             in our store + a record → pushed to every allowed peer (publisher.py)
    ├── puller    every ``pull_interval_s``: each allowed peer's own records
    └── followers one task per (seeder, person, project) whose mirror is behind: fetch
                  the next bundle's blob from allowed peers, apply it (``Mirror``;
                  follower.py)

The peer-channel routes are in routes.py; the records held, what was seeded, the
policy and ``state.json`` in state.py. This module wires them together, runs the
loops and answers the control socket's views.

A record is accepted only from its seeder: the UUID of the certificate that pushed it,
or of the peer we pulled it from, must be the record's ``seeder`` — records are never
relayed, so no signature is needed. Its person must be opted in. Gitback blobs live in
their own store (``<state>/swarm/gitback/.blobs``), not filecast's: filecast collects
every blob its manifest does not name, and these blobs go only to allowed envoys.

Everything a peer sends is checked before use; a bad record is logged once with its
reason, counted, and changes nothing. A failing repo never stops the service.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import trio

from .follower import Follower, blob_problem
from .mirror import mirror_path
from .publisher import CHUNK_BYTES, Publisher
from .routes import BLOBS, MAX_BODY, PREFIX, RECORDS_PATH, PeerRoutes
from .state import MAX_RECORDS_PER_MESSAGE, GitbackConfig, GitbackStats, Seeded

__all__ = [
    "BLOBS",
    "CHUNK_BYTES",
    "MAX_BODY",
    "MAX_RECORDS_PER_MESSAGE",
    "PREFIX",
    "RECORDS_PATH",
    "GitbackConfig",
    "GitbackService",
    "GitbackStats",
    "Seeded",
    "blob_problem",
]

log = logging.getLogger(__name__)


class GitbackService(PeerRoutes, Publisher, Follower):
    """``GitbackService(node, root, people, config)``: see ``GitbackState``."""

    # -------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._scanner)
            nursery.start_soon(self._puller)
            task_status.started()
            while True:
                wake = self._wake
                if self.allowed:
                    for key in self._behind():
                        if self.policy.opted_in(key[1]):
                            self._following.add(key)
                            nursery.start_soon(self._follow, key)
                with trio.move_on_after(self.config.pull_interval_s):
                    await wake.wait()

    async def _scanner(self) -> None:
        while True:
            try:
                await self.scan_once()
            except Exception:  # last line of defence: one bad pass never stops gitback
                log.exception("gitback: a scan failed unexpectedly")
            await trio.sleep(self.config.scan_interval_s)

    async def _puller(self) -> None:
        while True:
            if self.allowed:
                async with trio.open_nursery() as nursery:
                    for peer in self.allowed_peers():
                        nursery.start_soon(self.pull_from, peer)
            await trio.sleep(self.config.pull_interval_s)

    # ------------------------------------------------------------------ views

    def mirrors_view(self, person: str | None = None) -> list[dict[str, Any]]:
        """The mirrors this envoy holds (of ``person`` only, when given)."""
        out = []
        for key, recs in sorted(self.records.items()):
            seeder, user, project = key
            if seeder == self.me or (person is not None and user != person):
                continue
            path = mirror_path(self.root, *key)
            newest = max(recs) if recs else 0
            out.append(
                {
                    "seeder": seeder,
                    "seeder_hostname": self.hostnames.get(seeder),
                    "person": user,
                    "project": project,
                    "newest_seq": newest,
                    "path": str(path),
                    "problem": self.problems.get(key, ""),
                }
            )
        return out

    def published_view(self, person: str | None = None) -> list[dict[str, Any]]:
        out = []
        for (user, project), s in sorted(self.seeded.items()):
            if person is not None and user != person:
                continue
            last = self.records.get((self.me, user, project), {}).get(s.seq)
            out.append(
                {"person": user, "project": project, "seq": s.seq, "refs": len(s.tips),
                 "kind": last.kind if last else "", "size_bytes": last.size_bytes if last else 0,
                 "problem": self.problems.get((user, project), "")}
            )  # fmt: skip
        for key, problem in sorted(self.problems.items()):
            if len(key) == 2 and key not in self.seeded and (person is None or key[0] == person):
                out.append({"person": key[0], "project": key[1], "seq": 0, "refs": 0,
                            "kind": "", "size_bytes": 0, "problem": problem})  # fmt: skip
        return out

    def status(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "patterns": list(self.policy.patterns),
            "people": sorted(self.policy.users),
            "stats": dataclasses.asdict(self.stats),
            "mirrors": len([k for k in self.records if k[0] != self.me]),
            "published": len(self.seeded),
        }
