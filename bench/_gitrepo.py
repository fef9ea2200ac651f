"""A git repository of N commits in one ``git fast-import`` (seconds for thousands of
commits): used by bench/gitback.py and the gitback tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Carol",
    "GIT_AUTHOR_EMAIL": "carol@example.net",
    "GIT_COMMITTER_NAME": "Carol",
    "GIT_COMMITTER_EMAIL": "carol@example.net",
}


def _git(repo: Path, *args: str, input_bytes: bytes | None = None) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        input=input_bytes,
        check=True,
        capture_output=True,
    )


def generate_repo(repo: Path, commits: int, *, branch: str = "main", tag_every: int = 0) -> None:
    """``commits`` commits on ``branch`` (50 files, each commit changes one), checked out;
    with ``tag_every``, a lightweight tag ``v<i>`` every that many commits."""
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", branch)
    stamp = 1_700_000_000
    lines: list[bytes] = []
    for i in range(1, commits + 1):
        body = f"line {i}\n".encode() * 20 + hashlib.sha256(str(i).encode()).hexdigest().encode()
        msg = f"commit {i}\n".encode()
        lines += [
            f"commit refs/heads/{branch}\n".encode(),
            f"mark :{i}\n".encode(),
            f"committer Carol <carol@example.net> {stamp + i} +0000\n".encode(),
            f"data {len(msg)}\n".encode() + msg,
        ]
        if i > 1:
            lines.append(f"from :{i - 1}\n".encode())
        lines += [
            f"M 644 inline src/file{i % 50}.txt\n".encode(),
            f"data {len(body)}\n".encode() + body + b"\n",
        ]
        if tag_every and i % tag_every == 0:
            lines += [f"reset refs/tags/v{i}\nfrom :{i}\n\n".encode()]
    _git(repo, "fast-import", "--quiet", input_bytes=b"".join(lines))
    _git(repo, "reset", "-q", "--hard")
