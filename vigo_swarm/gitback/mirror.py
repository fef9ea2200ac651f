"""A mirror: a root-owned bare repository that receives one person's project from one
seeder, at ``<state>/swarm/gitback/mirrors/<seeder uuid>/<person>/<project>.git``.

Blocking IO, called through ``trio.to_thread``, one call at a time per mirror (the
service holds a lock per repo). Git runs as root here, but only on repositories we
made: ``git init --bare --template=`` (no sample hooks), ``core.hooksPath=/dev/null``
on every command, never a checkout.

``apply(record, bundle)`` (invariants in ``records``):

1. the bundle's header must say what the record says (``check_bundle``): only
   ``refs/heads/*`` and ``refs/tags/*``, the record's tips and prerequisites;
2. the record must be newer than what the mirror applied (``seq``), and an
   incremental one must extend exactly that (``base_seq``);
3. ``git bundle verify``: its prerequisites are here;
4. ``git bundle unbundle`` writes the objects (a pack; no ref moves), then
   ``rev-list --objects`` proves every new tip is complete;
5. ``plan_refs`` decides the new ref set (fast-forwards only for an incremental; a full
   record's overwritten tips go to ``refs/gitback-backup/<seq>/…``);
6. the new refs — with ``refs/gitback/state`` (a blob: seq, head, when) — become
   visible in **one** ``rename`` of a complete ``packed-refs`` file. The mirror holds
   no loose refs, so that rename is the only moment its state changes: a crash before
   it leaves the old state plus unreferenced objects; after it, the new state.
   Any refusal before step 6 leaves the refs untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir, write_all
from .gitcmd import GitError, fast_forwards, parse_ref_lines, run_git
from .records import (
    MAX_HEADER_BYTES,
    Record,
    RecordRejected,
    check_bundle,
    parse_bundle_header,
    plan_refs,
    render_packed_refs,
)

STATE_REF = "refs/gitback/state"
MIRROR_CONFIG = (
    ("core.hooksPath", "/dev/null"),
    ("core.logAllRefUpdates", "false"),
    ("gc.auto", "0"),  # no background repacking or pruning of our refs' objects
    ("receive.denyNonFastForwards", "true"),
    ("transfer.fsckObjects", "true"),
)


def mirror_path(root: Path, seeder: str, person: str, project: str) -> Path:
    """``root`` is ``<state>/swarm/gitback``; the names were validated by ``records``."""
    return root / "mirrors" / seeder / person / f"{project}.git"


@dataclass(frozen=True, slots=True)
class MirrorState:
    seq: int = 0
    head: str = ""
    kind: str = ""
    applied_unix: float = 0.0


@dataclass(frozen=True, slots=True)
class Applied:
    seq: int
    kind: str
    moved: tuple[str, ...]
    backed_up: tuple[str, ...]


class Mirror:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _git(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> bytes:
        return run_git(["--git-dir", str(self.path), *args], ok_codes=ok_codes).stdout

    def exists(self) -> bool:
        return (self.path / "HEAD").is_file() and not self.path.is_symlink()

    def ensure(self) -> None:
        """Create the bare repo if it is not there: built aside, then renamed in."""
        if self.exists():
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        stage = self.path.with_name(f".{self.path.name}.new-{secrets.token_hex(4)}")
        try:
            run_git(["init", "--quiet", "--bare", "--template=", "-b", "main", str(stage)])
            for key, value in MIRROR_CONFIG:
                run_git(["--git-dir", str(stage), "config", key, value])
            os.chmod(stage, 0o700)
            os.rename(stage, self.path)
            fsync_dir(str(self.path.parent))
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def recover(self) -> None:
        """After a crash: drop what a killed writer left (we are the only writer)."""
        if not self.exists():
            return
        for lock in ("packed-refs.lock", "HEAD.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / lock)
        pack_dir = self.path / "objects" / "pack"
        if pack_dir.is_dir():
            for name in os.listdir(pack_dir):
                if name.startswith("tmp_"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(pack_dir / name)
        loose = [p for p in (self.path / "refs").rglob("*") if p.is_file()]
        if loose:  # someone ran git here by hand: fold them in, keep our invariant
            self._git("pack-refs", "--all", "--prune")

    def state(self) -> MirrorState:
        if not self.exists():
            return MirrorState()
        try:
            raw = self._git("cat-file", "blob", STATE_REF)
        except GitError:
            return MirrorState()
        try:
            obj = json.loads(raw)
            return MirrorState(
                int(obj["seq"]), str(obj["head"]), str(obj["kind"]), float(obj["applied_unix"])
            )
        except (ValueError, KeyError, TypeError):
            return MirrorState()

    def refs(self) -> dict[str, str]:
        """Every ref of the mirror but its state ref (heads, tags, backups)."""
        if not self.exists():
            return {}
        out = self._git("for-each-ref", "--format=%(objectname) %(refname)")
        return {r: o for r, o in parse_ref_lines(out).items() if r != STATE_REF}

    def apply(self, record: Record, bundle: Path, now_unix: float) -> Applied:
        """Apply one bundle, or refuse it (``RecordRejected``) leaving the refs as they
        were. ``GitError`` if git itself failed (also leaves them as they were)."""
        with open(bundle, "rb") as f:
            header = parse_bundle_header(f.read(MAX_HEADER_BYTES + 2))
        check_bundle(header, record)
        self.ensure()
        self.recover()
        current = self.state()
        if record.seq <= current.seq:
            raise RecordRejected(
                f"stale: seq {record.seq} is not newer than the mirror's {current.seq}"
            )
        if record.kind == "incremental" and record.base_seq != current.seq:
            raise RecordRejected(
                f"seq {record.seq} extends {record.base_seq}, but the mirror is at {current.seq}"
            )
        verify = run_git(
            ["--git-dir", str(self.path), "bundle", "verify", str(bundle)], ok_codes=(0, 1, 128)
        )
        if verify.returncode != 0:
            lines = [ln for ln in verify.stderr.splitlines() if "error:" in ln]
            raise RecordRejected(
                "the bundle does not verify here: " + ("; ".join(lines)[:300] or verify.stderr)
            )
        self._git("bundle", "unbundle", str(bundle))
        tips = sorted(set(record.tips.values()))
        if tips:
            check = run_git(
                [
                    "--git-dir",
                    str(self.path),
                    "rev-list",
                    "--objects",
                    "--quiet",
                    "--stdin",
                    "--not",
                    "--all",
                ],
                input_bytes=("\n".join(tips) + "\n").encode(),
                ok_codes=(0, 1, 128),
            )
            if check.returncode != 0:
                raise RecordRejected("the bundle's tips are not complete: objects are missing")
        before = self.refs()
        live = {r: o for r, o in before.items() if r.startswith(("refs/heads/", "refs/tags/"))}
        moves = {
            r: (live[r], new) for r, new in record.tips.items() if r in live and live[r] != new
        }
        plan = plan_refs(before, record, fast_forwards(self.path, moves))
        state = {"seq": record.seq, "head": record.head, "kind": record.kind}
        blob = (
            run_git(
                ["--git-dir", str(self.path), "hash-object", "-w", "--stdin"],
                input_bytes=json.dumps(
                    {**state, "applied_unix": now_unix}, sort_keys=True
                ).encode(),
            )
            .stdout.decode()
            .strip()
        )
        self._replace("packed-refs", render_packed_refs({**plan.refs, STATE_REF: blob}))
        if record.head:
            self._replace("HEAD", f"ref: {record.head}\n".encode())
        return Applied(record.seq, record.kind, plan.moved, plan.backed_up)

    def _replace(self, name: str, data: bytes) -> None:
        """Write ``name`` whole through git's own lock file name, then rename it in."""
        lock = os.path.join(self.path, name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            write_all(fd, memoryview(data), None)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(lock)
            raise
        os.close(fd)
        os.rename(lock, os.path.join(self.path, name))
        fsync_dir(str(self.path))

    def export_bundle(self, out: Path) -> None:
        """A full bundle of the mirror's heads and tags (for a restore)."""
        with open(out, "wb") as f:
            run_git(
                ["--git-dir", str(self.path), "bundle", "create", "--quiet", "-",
                 "--branches", "--tags"],
                stdout=f,
            )  # fmt: skip
