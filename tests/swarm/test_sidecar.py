"""The sidecar parser (pure): what a seeder accepts in ``NAME.swarm``, and a specific
error for each kind of bad sidecar or bad file beside it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vigo_agent.sidecars import publish_body
from vigo_swarm.blobstore import BlobInfo
from vigo_swarm.manifest import MAX_SIZE_BYTES, Retention, RetentionKind, parse_retention
from vigo_swarm.sidecar import (
    MAX_SIDECAR_BYTES,
    SidecarError,
    check_data_file,
    check_sidecar_file,
    data_name,
    parse_sidecar,
)

NOW = 1_700_000_000.0


def ok(text: str) -> tuple[tuple[str, ...], Retention]:
    sidecar = parse_sidecar(text.encode(), NOW)
    return sidecar.targets, sidecar.retention


def test_good_sidecars() -> None:
    assert ok("target: etc/motd\n") == (("etc/motd",), Retention.until_revoked())
    assert ok("target: [etc/a, etc/b]\nretention: pinned\n") == (
        ("etc/a", "etc/b"),
        Retention.pinned(),
    )
    assert ok("# a comment\ntarget:\n  - opt/tool.tgz\nretention: expires_at:1800000000\n") == (
        ("opt/tool.tgz",),
        Retention.expires_at(1_800_000_000),
    )
    assert ok('---\n"target": "etc/motd"\nretention: until_revoked\n...\n')[0] == ("etc/motd",)
    for text in ("expires_at:1800000000", "expires_at:1800000000.5", "expires_at:1800000000.25"):
        sidecar = parse_sidecar(f"target: x\nretention: {text}".encode(), NOW)
        assert sidecar.retention.kind is RetentionKind.EXPIRES_AT
        # what the seeder sends is what the server's parser (the same one) reads back
        assert sidecar.retention_text == text
        assert parse_retention(sidecar.retention_text, NOW) == sidecar.retention


BAD = [
    # (sidecar bytes, words the error must contain)
    (b"", "is empty"),
    (b"# only a comment\n", "is empty"),
    (b"\xff\xfe target: x", "not UTF-8"),
    (b"target: [unclosed", "not valid YAML at line"),
    (b"target: a\n  bad: indent", "not valid YAML"),
    (b"- etc/motd\n", "must be a mapping"),
    (b"etc/motd\n", "must be a mapping"),
    (b"retention: pinned\n", "`target` is missing"),
    (b"targets: etc/motd\n", "unknown key 'targets'"),
    (b"target: x\nchunk_bytes: 65536\n", "unknown key 'chunk_bytes'"),
    (b"target: x\ntarget: y\n", "appears twice"),
    (b"target: 5\n", "not a number"),
    (b"target: yes\n", "not true/false"),
    (b"target:\n", "not empty"),
    (b"target: {a: b}\n", "not a mapping"),
    (b"target: [a, 5]\n", "a list of paths as text"),
    (b"target: []\n", "empty list"),
    (b"target: [a, a]\n", "lists 'a' twice"),
    (b"target: [" + b", ".join(b"t%d" % i for i in range(65)) + b"]\n", "at most 64"),
    (b"target: /etc/motd\n", "absolute"),
    (b"target: etc/../../root/.ssh/authorized_keys\n", "'..' component"),
    (b'target: "etc/mo\\0td"\n', "NUL"),
    (b'target: ""\n', "empty"),
    (b"target: etc//motd\n", "'empty' component"),
    (b'target: "etc\\\\motd"\n', "backslash"),
    (b"target: " + b"a" * 1025 + b"\n", "over 1024 bytes"),
    (("target: " + "é" * 600 + "\n").encode(), "1200 bytes long"),
    (b"target: etc/" + b"a" * 256 + b"\n", "a component is over 255 bytes"),
    (b"target: x\nretention: forever\n", "not until_revoked, pinned or expires_at"),
    (b"target: x\nretention: expires_at:1\n", "not in the future"),
    (b"target: x\nretention: expires_at:soon\n", "is not Unix seconds"),
    (b"target: x\nretention: expires_at:99999999999999\n", "beyond the year 9999"),
    (b"target: x\nretention: 1800000000\n", "must be text"),
    (b"target: x\nretention:\n", "must be text"),
    # YAML features a sidecar never needs: bombs, tags, several documents
    (b"a: &a [x, x]\nb: &b [*a, *a]\ntarget: *b\n", "anchors and aliases"),
    (b"target: !!python/object:os.system x\n", "tags"),
    (b"target: !!str x\n", "tags"),
    (b"target: !custom x\n", "tags"),
    (b"target: x\n---\ntarget: y\n", "more than one YAML document"),
    (b"target: [" + b",".join([b"[[]]"] * 100) + b"]\n", "more YAML nodes"),
    (b"target: x\n" + b"#" * MAX_SIDECAR_BYTES, "over 16384 bytes"),
]


@pytest.mark.parametrize(("raw", "words"), BAD, ids=[w for _, w in BAD])
def test_each_bad_sidecar_gets_its_own_error(raw: bytes, words: str) -> None:
    with pytest.raises(SidecarError) as caught:
        parse_sidecar(raw, NOW)
    assert words in str(caught.value), str(caught.value)


def test_data_names() -> None:
    assert data_name("motd.swarm") == "motd"
    assert data_name("tool.tar.gz.swarm") == "tool.tar.gz"
    for bad, words in ((".swarm", "names no file"), ("a.swarm.swarm", "itself a sidecar")):
        with pytest.raises(SidecarError, match=words):
            data_name(bad)
    with pytest.raises(SidecarError, match="not a sidecar"):
        data_name("motd")


def fake_stat(mode: int, size: int = 10) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, 0, 0, size, 0, 0, 0))


def test_the_file_beside_the_sidecar() -> None:
    check_data_file("motd", fake_stat(stat.S_IFREG | 0o644))
    check_data_file("empty", fake_stat(stat.S_IFREG | 0o644, 0))
    cases = [
        (None, "does not exist"),
        (fake_stat(stat.S_IFLNK | 0o777), "is a symlink"),
        (fake_stat(stat.S_IFDIR | 0o755), "not a regular file"),
        (fake_stat(stat.S_IFIFO | 0o644), "not a regular file"),
        (fake_stat(stat.S_IFREG | 0o644, MAX_SIZE_BYTES + 1), "at most 1 TiB"),
    ]
    for st, words in cases:
        with pytest.raises(SidecarError, match=words):
            check_data_file("motd", st)


def test_the_sidecar_file_itself() -> None:
    check_sidecar_file(fake_stat(stat.S_IFREG | 0o644, MAX_SIDECAR_BYTES))
    cases = [
        (fake_stat(stat.S_IFLNK | 0o777), "is a symlink"),
        (fake_stat(stat.S_IFDIR | 0o755), "not a regular file"),
        (fake_stat(stat.S_IFREG | 0o644, MAX_SIDECAR_BYTES + 1), "at most 16384"),
    ]
    for st, words in cases:
        with pytest.raises(SidecarError, match=words):
            check_sidecar_file(st)


def test_the_request_a_seeder_sends() -> None:
    info = BlobInfo("a" * 64, 10, 1 << 20, (bytes.fromhex("a" * 64),))
    body = publish_body(
        Path("/srv/seed/motd.swarm"),
        parse_sidecar(b"target: [etc/motd, etc/issue]\nretention: pinned", NOW),
        info,
    )
    assert body == {
        "sidecar": "/srv/seed/motd.swarm",
        "targets": ["etc/motd", "etc/issue"],
        "retention": "pinned",
        "blob": {
            "sha256": "a" * 64,
            "size_bytes": 10,
            "chunk_bytes": 1 << 20,
            "chunks_digest": info.chunks_digest,
        },
    }
