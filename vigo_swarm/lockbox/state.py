"""What lockbox keeps on disk besides the blobs, and the codecs for it.

- ``<swarm>/lockbox/index/<puddle public key hex>.json`` (root, 0600): the puddle's
  record set in wire form — ciphertext and blob hashes only, no names. Written
  atomically (temp, fsync, rename, dir fsync). A damaged file is set aside as
  ``.damaged`` and the set starts empty (members send it back at the next exchange).
- ``~/.vigo-puddle/lockbox-state.json`` (the person's, 0600): path → the record it
  reflects and the file's stat when we wrote or recorded it (``plan.Local``). It names
  the person's files, so it lives in their home beside the files themselves, never
  in the swarm state. Damaged: starts empty, which is safe (every file is then new
  and recorded again; nothing is deleted anywhere).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from ..blobstore import is_sha256
from ..durable import fsync_dir, write_new
from .errors import BadRecord
from .plan import Local, Stat
from .records import Record, record_from_wire, validate_name

log = logging.getLogger(__name__)

LOCAL_FORMAT = 1


def load_records(path: Path) -> dict[str, Record]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict) or not isinstance(obj.get("records"), list):
            raise BadRecord("not {records: [...]}")
        records = [record_from_wire(r) for r in obj["records"]]
    except (UnicodeDecodeError, json.JSONDecodeError, BadRecord) as exc:
        damaged = path.with_name(path.name + ".damaged")
        os.replace(path, damaged)
        log.warning("lockbox: index %s is damaged (%s): moved aside, starting empty", path, exc)
        return {}
    return {r.id: r for r in records}


def save_records(path: Path, records: dict[str, Record]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = {"records": [records[k].to_wire() for k in sorted(records)]}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_new(tmp, json.dumps(body, separators=(",", ":")).encode(), 0o600)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def encode_local(puddle_hex: str, local: dict[str, Local]) -> bytes:
    files = {
        p: [lf.record, lf.stat.size, lf.stat.mtime_ns, lf.stat.mode, lf.stat.ino]
        for p, lf in sorted(local.items())
    }
    return json.dumps({"v": LOCAL_FORMAT, "puddle": puddle_hex, "files": files}).encode()


def decode_local(raw: bytes | None, puddle_hex: str) -> dict[str, Local]:
    """The person's table, or {} when absent, damaged, or for another puddle."""
    if raw is None:
        return {}
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(obj, dict) or obj.get("v") != LOCAL_FORMAT:
        return {}
    if obj.get("puddle") != puddle_hex or not isinstance(obj.get("files"), dict):
        return {}
    out: dict[str, Local] = {}
    for path, item in obj["files"].items():
        if _local_item_ok(path, item):
            rec, size, mtime, mode, ino = item
            out[path] = Local(rec, Stat(size, mtime, mode, ino))
    return out


def _local_item_ok(path: str, item: Any) -> bool:
    try:
        validate_name(path)
    except BadRecord:
        return False
    return (
        isinstance(item, list)
        and len(item) == 5
        and is_sha256(item[0])
        and all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:])
    )
