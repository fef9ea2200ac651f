"""Real git repositories for gitback tests: commits, bundles, records (a fast-generated
repo: ``generate_repo`` from bench/_gitrepo.py)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from bench._gitrepo import GIT_ENV, generate_repo
from vigo_swarm.blobstore import describe_file
from vigo_swarm.gitback.gitcmd import parse_ref_lines
from vigo_swarm.gitback.records import Record, parse_bundle_header

ENV = {
    **os.environ,
    **GIT_ENV,
    # the tests (root) look into people's repos; the code under test never does this
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": "*",
}
CHUNK = 64 * 1024


def git(repo: Path, *args: str, input_bytes: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=ENV, input=input_bytes, capture_output=True
    )
    if done.returncode != 0:
        raise AssertionError(f"git {args}: {done.stderr.decode()}")
    return done.stdout.decode()


def commit(repo: Path, message: str, name: str = "new.txt") -> str:
    (repo / name).write_text(f"{message} {time.monotonic_ns()}\n")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def heads_and_tags(git_dir: Path) -> dict[str, str]:
    out = git(
        git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"
    )
    return parse_ref_lines(out.encode())


def bundle(repo: Path, out: Path, *revs: str) -> Path:
    git(repo, "bundle", "create", "--quiet", str(out), *revs)
    return out


def record_for(
    path: Path,
    *,
    seeder: uuid.UUID,
    seq: int,
    kind: str = "full",
    base_seq: int = 0,
    person: str = "carol",
    project: str = "notes",
    tips: dict[str, str] | None = None,
    head: str = "refs/heads/main",
) -> Record:
    """The record a seeder would publish for the bundle at ``path``."""
    header = parse_bundle_header(path.read_bytes()[: 1 << 20])
    info = describe_file(path, CHUNK)
    return Record(
        seeder=seeder,
        person=person,
        project=project,
        seq=seq,
        kind=kind,  # type: ignore[arg-type]
        base_seq=base_seq,
        blob=info.sha256,
        size_bytes=info.size_bytes,
        chunk_bytes=info.chunk_bytes,
        chunks_digest=info.chunks_digest,
        tips=dict(header.refs) if tips is None else tips,
        head=head,
        prerequisites=tuple(sorted(header.prerequisites)),
        created_unix=1.0,
    )


__all__ = ["ENV", "bundle", "commit", "generate_repo", "git", "heads_and_tags", "record_for"]
