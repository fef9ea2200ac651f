"""Path validation (hostile names), ignore rules and conflict names."""

from __future__ import annotations

import pytest

from vigo_swarm.longdrawer import BadPath, IgnoreRules, conflict_name, is_conflict_copy
from vigo_swarm.longdrawer import validate_path as valid
from vigo_swarm.longdrawer.paths import validate_name


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a\0b", "NUL"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("./a", "'.'"),
        ("", "1..4096"),
        ("x" * 256, "over 255"),
        ("a/" * 2100, "1..4096"),
        ("\udcff", "UTF-8"),
    ],
)
def test_hostile_paths_are_refused(path: str, reason: str) -> None:
    with pytest.raises(BadPath, match=reason):
        valid(path)


def test_non_strings_and_slashes_in_names_are_refused() -> None:
    with pytest.raises(BadPath, match="string"):
        valid(b"a")
    with pytest.raises(BadPath, match="contains '/'"):
        validate_name("a/b")
    assert valid("dir/sub/file.txt") == "dir/sub/file.txt"
    assert valid("back\\slash") == "back\\slash"  # an ordinary character on Linux


@pytest.mark.parametrize(
    "path",
    [
        ".notes.txt.swp",
        "d/.x.swx",
        "4913",
        "draft~",
        ".#lock",
        "#autosave#",
        ".~lock.report.odt#",
        "a/.longdrawer-tmp-1234",
        ".longdrawerignore",
        "dl.crdownload",
    ],
)
def test_editor_and_own_temp_files_are_ignored(path: str) -> None:
    assert IgnoreRules().ignored(path)


def test_longdrawerignore_patterns() -> None:
    rules = IgnoreRules.parse("# comment\n*.log\nbuild/\ncache/tmp\n\n")
    assert rules.patterns == ("*.log", "build", "cache/tmp")
    assert rules.ignored("x.log") and rules.ignored("deep/down/y.log")
    assert rules.ignored("build") and rules.ignored("build/out.o")
    assert rules.ignored("src/build/out.o")  # no '/' in the pattern: any depth
    assert rules.ignored("cache/tmp/f") and not rules.ignored("other/cache/tmp/f")
    assert not rules.ignored("notes.txt") and not rules.ignored("sub/.longdrawerignore2")


def test_conflict_names_are_deterministic_and_recognized() -> None:
    envoy = "1a2b3c4d-0000-4000-8000-000000000000"
    mtime = 1_704_164_645 * 10**9  # 2024-01-02 03:04:05 UTC
    name = conflict_name("dir/report.txt", mtime, envoy)
    assert name == "dir/report.sync-conflict-20240102-030405-1a2b3c4d.txt"
    assert (
        conflict_name("Makefile", mtime, envoy) == "Makefile.sync-conflict-20240102-030405-1a2b3c4d"
    )
    assert conflict_name(".bashrc", mtime, envoy).startswith(".bashrc.sync-conflict-")
    assert is_conflict_copy(name) and not is_conflict_copy("dir/report.txt")
    long = conflict_name("x" * 250 + ".txt", mtime, envoy)
    assert valid(long) and len(long.encode()) <= 255
