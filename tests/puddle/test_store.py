"""~/.vigo-puddle/: modes and owner, strict reads, and refusal of planted links."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from puddle_helpers import new_puddle

from vigo_swarm.puddle import (
    BadMemberList,
    CorruptIdentity,
    NoPuddle,
    Person,
    PuddleDir,
    UnsafePuddleDir,
    sign_members,
)
from vigo_swarm.puddle.store import encode_members

ENVOY = uuid.uuid4()


@pytest.fixture
def pdir(tmp_path: Path) -> PuddleDir:
    return PuddleDir(Person(os.geteuid(), os.getegid(), tmp_path))


def test_create_then_read(pdir: PuddleDir) -> None:
    key, puddle = new_puddle(ENVOY)
    assert not pdir.exists()
    with pytest.raises(NoPuddle):
        pdir.read()
    pdir.create(puddle)
    assert pdir.exists()
    assert pdir.read() == puddle
    assert stat.S_IMODE(pdir.path.stat().st_mode) == 0o700
    for name in ("identity", "members.json"):
        assert stat.S_IMODE((pdir.path / name).stat().st_mode) == 0o600
    assert sorted(os.listdir(pdir.path)) == ["identity", "members.json"]  # no temp left
    with pytest.raises(UnsafePuddleDir, match="already exists"):
        pdir.create(puddle)
    newer = sign_members(key, 2, [ENVOY, uuid.uuid4()])
    pdir.replace(members=newer)
    assert pdir.read().members == newer


@pytest.mark.parametrize("offset", [0, 20, 40, 80, 120, 200])
def test_a_flipped_identity_file_is_rejected_and_left_alone(pdir: PuddleDir, offset: int) -> None:
    pdir.create(new_puddle(ENVOY)[1])
    path = pdir.path / "identity"
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x80
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptIdentity, match=str(path)):
        pdir.read()
    assert path.read_bytes() == bytes(data)


def test_truncated_and_garbage_files_are_rejected(pdir: PuddleDir) -> None:
    pdir.create(new_puddle(ENVOY)[1])
    ident = pdir.path / "identity"
    good = ident.read_bytes()
    ident.write_bytes(good[:150])
    with pytest.raises(CorruptIdentity, match="150 bytes, not 211"):
        pdir.read()
    ident.write_bytes(good)
    members = pdir.path / "members.json"
    for junk, message in ((b"{", "not JSON"), (b"[]", "keys"), (b"\xff", "not JSON")):
        members.write_bytes(junk)
        with pytest.raises(BadMemberList, match=message):
            pdir.read()


def test_a_member_list_of_another_puddle_is_rejected(pdir: PuddleDir) -> None:
    pdir.create(new_puddle(ENVOY)[1])
    other = new_puddle(ENVOY)[1]
    (pdir.path / "members.json").write_bytes(encode_members(other.members))
    with pytest.raises(BadMemberList, match="another puddle"):
        pdir.read()


def test_a_symlinked_puddle_dir_is_refused(pdir: PuddleDir, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    pdir.path.symlink_to(elsewhere)
    with pytest.raises(UnsafePuddleDir, match="not a directory"):
        pdir.read()
    with pytest.raises(UnsafePuddleDir):
        pdir.create(new_puddle(ENVOY)[1])
    assert os.listdir(elsewhere) == []


def test_planted_links_and_fifos_are_refused(pdir: PuddleDir, tmp_path: Path) -> None:
    pdir.create(new_puddle(ENVOY)[1])
    ident = pdir.path / "identity"
    real = tmp_path / "real"
    real.write_bytes(ident.read_bytes())
    real.chmod(0o600)
    ident.unlink()
    ident.symlink_to(real)
    with pytest.raises(UnsafePuddleDir, match="symbolic link"):
        pdir.read()
    ident.unlink()
    os.link(real, ident)  # a hard link: two names
    with pytest.raises(UnsafePuddleDir, match="one link"):
        pdir.read()
    ident.unlink()
    os.mkfifo(ident, 0o600)
    with pytest.raises(UnsafePuddleDir, match="regular file"):
        pdir.read()


def test_group_readable_dir_or_file_is_refused(pdir: PuddleDir) -> None:
    pdir.create(new_puddle(ENVOY)[1])
    pdir.path.chmod(0o750)
    with pytest.raises(UnsafePuddleDir, match="mode 750"):
        pdir.read()
    pdir.path.chmod(0o700)
    (pdir.path / "members.json").chmod(0o644)
    with pytest.raises(UnsafePuddleDir, match="mode 644"):
        pdir.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_files_owned_by_someone_else_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 4242, 4242)
    pdir = PuddleDir(Person(4242, 4242, home))
    pdir.create(new_puddle(ENVOY)[1])
    st = (pdir.path / "identity").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4242)  # written as root, handed to the person
    assert pdir.path.stat().st_uid == 4242
    os.chown(pdir.path / "identity", 0, 0)
    with pytest.raises(UnsafePuddleDir, match="owned by uid 0, not 4242"):
        pdir.read()
    # a different person reading the same home is refused at the home itself
    with pytest.raises(UnsafePuddleDir, match="owned by uid 4242, not 4343"):
        PuddleDir(Person(4343, 4343, home)).read()
