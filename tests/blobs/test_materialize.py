"""Materialization: target symlinks under files/, never a write outside it."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from blob_helpers import CHUNK, make_source

from vigo_swarm.blobstore import BlobStore
from vigo_swarm.materialize import (
    InvalidTarget,
    MaterializeError,
    TargetRefused,
    is_blob_link,
    materialize,
    unmaterialize,
)


@pytest.fixture
def swarm(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(files_root, blob A, blob B) under one state dir, plus an ``outside`` dir."""
    store = BlobStore(tmp_path / "swarm")
    blobs = []
    for seed in (1, 2):
        info = store.add_file(make_source(tmp_path, 100 + seed, seed=seed), CHUNK)
        path = store.blob_path(info.sha256)
        assert path is not None
        blobs.append(path)
    (tmp_path / "outside").mkdir()
    return tmp_path / "swarm" / "files", blobs[0], blobs[1]


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_create_then_replace_atomically(swarm: tuple[Path, Path, Path]) -> None:
    files, a, b = swarm
    link = materialize(files, "etc/motd", a)
    assert link == files / "etc" / "motd"
    assert os.readlink(link) == str(a.absolute()) and link.read_bytes() == a.read_bytes()
    assert materialize(files, "etc/motd", a) == link  # the same link: a no-op
    inode = os.lstat(link).st_ino
    materialize(files, "etc/motd", b)
    assert os.readlink(link) == str(b.absolute())
    assert os.lstat(link).st_ino != inode  # a new link renamed over the old one
    assert tree(files) == ["etc", "etc/motd"]  # no temp link left behind


BAD_TARGETS = [
    "",
    "/etc/passwd",
    "..",
    ".",
    "../escape",
    "a/../../escape",
    "a/./b",
    "./a",
    "a//b",
    "a/",
    "a\\b",
    "a\x00b",
    "a\nb",
    "x" * 1025,
    "a/" + "y" * 256,
    "/".join(["d"] * 513),  # 1025 bytes of short components
]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_bad_targets_write_nothing(swarm: tuple[Path, Path, Path], target: str) -> None:
    files, a, _ = swarm
    with pytest.raises(InvalidTarget):
        materialize(files, target, a)
    with pytest.raises(InvalidTarget):
        unmaterialize(files, target)
    assert not files.exists()
    assert tree(files.parent.parent / "outside") == []


def test_long_but_legal_targets_work(swarm: tuple[Path, Path, Path]) -> None:
    files, a, _ = swarm
    for target in ["z" * 255, "/".join(["d"] * 512), "ünïcödé/файл"]:
        assert materialize(files, target, a).read_bytes() == a.read_bytes()


@pytest.mark.parametrize("depth", ["etc", "a/b"])
def test_a_symlinked_directory_is_never_followed(
    swarm: tuple[Path, Path, Path], tmp_path: Path, depth: str
) -> None:
    files, a, _ = swarm
    outside = tmp_path / "outside"
    (files / depth).parent.mkdir(parents=True, exist_ok=True)
    (files / depth).symlink_to(outside)  # e.g. files/etc -> /etc
    with pytest.raises(TargetRefused, match="symlink or not a directory"):
        materialize(files, f"{depth}/motd", a)
    with pytest.raises(TargetRefused):
        materialize(files, f"{depth}/deeper/motd", a)
    assert tree(outside) == []


def test_unmaterialize_never_goes_through_a_symlink(
    swarm: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    files, a, _ = swarm
    outside = tmp_path / "outside"
    (outside / "motd").symlink_to(a)  # looks like ours, but lives outside files/
    files.mkdir()
    (files / "etc").symlink_to(outside)
    with pytest.raises(TargetRefused):
        unmaterialize(files, "etc/motd")
    assert (outside / "motd").is_symlink()


def test_files_root_itself_must_not_be_a_symlink(
    swarm: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    files, a, _ = swarm
    files.symlink_to(tmp_path / "outside")
    with pytest.raises(TargetRefused, match="symlink"):
        materialize(files, "motd", a)
    assert tree(tmp_path / "outside") == []


def test_a_file_where_a_directory_is_needed_is_refused(swarm: tuple[Path, Path, Path]) -> None:
    files, a, _ = swarm
    files.mkdir()
    (files / "etc").write_text("a regular file")
    with pytest.raises(TargetRefused, match="files/etc is a symlink or not a directory"):
        materialize(files, "etc/motd", a)
    assert (files / "etc").read_text() == "a regular file"


@pytest.mark.parametrize("kind", ["file", "dir", "foreign-link"])
def test_only_our_links_are_replaced_or_removed(
    swarm: tuple[Path, Path, Path], tmp_path: Path, kind: str
) -> None:
    files, a, _ = swarm
    files.mkdir()
    target = files / "motd"
    if kind == "file":
        target.write_text("operator's own")
    elif kind == "dir":
        target.mkdir()
    else:
        target.symlink_to("/etc/passwd")
    with pytest.raises(TargetRefused, match=r"left alone|not made by us"):
        materialize(files, "motd", a)
    with pytest.raises(TargetRefused):
        unmaterialize(files, "motd")
    assert target.is_symlink() if kind == "foreign-link" else target.exists()
    if kind == "file":
        assert target.read_text() == "operator's own"


def test_unmaterialize_removes_our_link_and_prunes_empty_dirs(
    swarm: tuple[Path, Path, Path],
) -> None:
    files, a, b = swarm
    materialize(files, "a/b/c/motd", a)
    materialize(files, "a/keep", b)
    assert unmaterialize(files, "a/b/c/motd")
    assert tree(files) == ["a", "a/keep"]  # b/c pruned, a kept (not empty)
    assert not unmaterialize(files, "a/b/c/motd")  # already gone
    assert unmaterialize(files, "a/keep")
    assert tree(files) == [] and files.is_dir()  # files/ itself stays
    assert a.exists() and b.exists()  # the blobs are the store's business
    assert not unmaterialize(files, "never/was")


def test_only_complete_blobs_are_linked(swarm: tuple[Path, Path, Path], tmp_path: Path) -> None:
    files, a, _ = swarm
    with pytest.raises(MaterializeError, match="not a blob path"):
        materialize(files, "motd", tmp_path / "outside")
    with pytest.raises(MaterializeError, match="not a complete blob"):
        materialize(files, "motd", a.parent / ("0" * 64))
    assert not files.exists()


def test_is_blob_link() -> None:
    good = "/var/lib/vigo/swarm/.blobs/" + "a" * 64
    assert is_blob_link(good)
    for bad in [good[1:], good + "x", "/x/.blobs/../" + "a" * 64, "/.blobs/" + "A" * 64, "/etc"]:
        assert not is_blob_link(bad)


def test_directory_swapped_for_a_symlink_mid_operation(
    swarm: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A thread keeps turning files/a into a symlink to outside/ and back while
    materialize runs again and again: nothing ever lands outside."""
    files, a, b = swarm
    outside = tmp_path / "outside"
    files.mkdir()
    (files / "old").mkdir()
    stop = threading.Event()

    def swapper() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            victim = files / "a"
            try:
                if victim.is_symlink():
                    victim.unlink()
                    victim.mkdir()
                elif victim.is_dir():
                    victim.rename(files / "old" / str(n))  # stays inside files/
                    victim.symlink_to(outside)
                else:
                    victim.symlink_to(outside)
            except OSError:
                pass  # materialize raced us: fine, go on

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes = {"ok": 0, "refused": 0}
    try:
        for i in range(400):
            try:
                materialize(files, "a/b/c/motd", a if i % 2 else b)
                outcomes["ok"] += 1
            except TargetRefused:
                outcomes["refused"] += 1
            assert tree(outside) == []
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old_interval)
    assert sum(outcomes.values()) == 400
    assert tree(outside) == []
