"""The swarm manifest: a last-writer-wins CRDT of signed blob records.

One record per ``key`` (``filecast/<record-id>``): which blob, its size and chunking,
where it is materialized (``targets``), how long it is kept (``retention``), or — when
``tombstone`` is set — that it was revoked. Every record is signed by an operator
authority (the server's key every envoy learned at enrollment, or a seeder key the
server delegated); an envoy's own key is never an authority.

Invariants (everything that decides what the manifest holds lives in this file; it
does no IO and takes ``now_ms`` — Unix milliseconds — as an argument):

1. A record is merged only after its fields validate, its HLC is at most
   ``max_drift_ms`` ahead of ``now_ms``, and its signature verifies under the key that
   ``authority_keys`` holds for its ``origin``. Anything else raises ``RecordRejected``
   and changes nothing.
2. Per key the record with the greatest ``(hlc, origin)`` wins (then the greatest
   SHA-256 of the canonical bytes, so even a signer that reused a stamp cannot make
   two envoys disagree). The order is total and the same on every envoy, so merging
   is commutative, associative and idempotent: any envoys that saw the same records,
   in any order and any number of times, hold the same state.
3. Freshness is checked per key: a record older than the one held is ignored, so a
   stale peer can never bring back a revoked record while its tombstone is held. A
   tombstone is an ordinary record: it beats older adds and loses to newer ones.
4. Tombstones are kept ``tombstone_keep_ms`` (30 days) after their HLC — longer than
   the longest offline window; an envoy offline longer than that may see a revoked
   record return from a peer as stale as itself.
5. ``version`` is the XOR of a 63-bit hash of each held ``(key, hlc, origin)``: equal
   on two envoys iff they hold the same stamps (up to a 2^-63 collision), independent
   of merge order, updated in O(1).

Exceptions::

    ManifestError
     ├── RecordRejected        .reason — a record is refused; nothing changed (a ValueError)
     │    ├── MalformedRecord  not an object; unknown, missing or badly encoded fields
     │    ├── InvalidField     .field — a field breaks its rule (the message says which)
     │    │    ├── InvalidTarget  .path — a target path is unsafe (also the blob store's)
     │    │    └── InvalidRetention  an operator's retention text does not parse
     │    ├── UnknownSigner    .origin — no authority key for the record's origin
     │    ├── BadSignature     the signature does not verify
     │    └── FarFutureRecord  .ahead_ms — the HLC is too far ahead of our clock
     ├── MalformedSummary      a peer's summary is not valid (a ValueError)
     └── ManifestStoreError    the SQLite store failed (manifest_store.py)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from .hlc import DEFAULT_MAX_DRIFT_MS, MAX_STAMP, wall_ms_of

DOMAIN = b"vigo-manifest-v1\n"
MAX_KEY_CHARS = 200
MAX_ORIGIN_CHARS = 64
MAX_SIZE_BYTES = 1 << 40
MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024
TARGET_CHUNKS = 256  # the default chunking aims at about this many chunks per blob
DEFAULT_MIN_CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_CHUNK_BYTES = 4 * 1024 * 1024
MAX_TARGETS = 64
MAX_TARGET_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_EXPIRES_AT_UNIX = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def default_chunk_bytes(size_bytes: int) -> int:
    """How an operator's file is chunked unless they say: a power of two giving about
    ``TARGET_CHUNKS`` chunks, within 256 KiB … 4 MiB (64 MiB → 256 KiB, 1 GiB → 4 MiB).

    Enough chunks that every receiver gets distinct ones from the seeder early and can
    trade them on while the rest arrive (a chunk can be passed on only once whole); few
    enough that per-chunk requests stay cheap.
    """
    wanted = max(1, -(-size_bytes // TARGET_CHUNKS))  # at most TARGET_CHUNKS chunks
    chunk = 1 << (wanted - 1).bit_length()
    return min(DEFAULT_MAX_CHUNK_BYTES, max(DEFAULT_MIN_CHUNK_BYTES, chunk))


MAX_SUMMARY_ENTRIES = 100_000
DEFAULT_TOMBSTONE_KEEP_MS = 30 * 24 * 3600 * 1000

_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._/-]*")
_ORIGIN_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class ManifestError(Exception):
    """Base of every error this module and the manifest store raise."""


class RecordRejected(ManifestError, ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MalformedRecord(RecordRejected):
    pass


class InvalidField(RecordRejected):
    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"invalid field {field!r}: {problem}")


class InvalidTarget(InvalidField):
    def __init__(self, path: object, problem: str) -> None:
        self.path = path
        RecordRejected.__init__(self, f"invalid target path {path!r}: {problem}")
        self.field = "targets"


class InvalidRetention(InvalidField):
    """An operator's retention text does not parse (``parse_retention``)."""

    def __init__(self, problem: str) -> None:
        RecordRejected.__init__(self, problem)
        self.field = "retention"


class UnknownSigner(RecordRejected):
    def __init__(self, origin: str) -> None:
        self.origin = origin
        super().__init__(f"signer {origin!r} is not an authority (not the server or a seeder)")


class BadSignature(RecordRejected):
    pass


class FarFutureRecord(RecordRejected):
    def __init__(self, ahead_ms: int, max_drift_ms: int) -> None:
        self.ahead_ms = ahead_ms
        super().__init__(f"timestamp is {ahead_ms} ms ahead of our clock (max {max_drift_ms})")


class MalformedSummary(ManifestError, ValueError):
    pass


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_target(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX target path, else raise InvalidTarget.

    Non-empty, at most 1024 UTF-8 bytes, no NUL or other control character, no
    backslash, not absolute, no empty, ``.`` or ``..`` component, each component at
    most 255 bytes. (Escapes through symlinks on disk are the blob store's to check.)
    """
    if not isinstance(path, str):
        raise InvalidTarget(path, "not a string")
    if not path:
        raise InvalidTarget(path, "empty")
    if len(path) > MAX_TARGET_BYTES:  # cheap first: a character is at least one byte
        raise InvalidTarget(path[:64] + "…", f"over {MAX_TARGET_BYTES} bytes long")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTarget(path, "not valid UTF-8") from None
    if size > MAX_TARGET_BYTES:
        raise InvalidTarget(path, f"{size} bytes long (max {MAX_TARGET_BYTES})")
    if "\x00" in path:
        raise InvalidTarget(path, "contains a NUL byte")
    if "\\" in path:
        raise InvalidTarget(path, "contains a backslash")
    if _CONTROL_RE.search(path):
        raise InvalidTarget(path, "contains a control character")
    if path.startswith("/"):
        raise InvalidTarget(path, "absolute (must be relative to the files directory)")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidTarget(path, f"has a {part or 'empty'!r} component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidTarget(path, f"a component is over {MAX_COMPONENT_BYTES} bytes")
    return path


class RetentionKind(enum.StrEnum):
    PINNED = "pinned"  # never collected while the record is live
    UNTIL_REVOKED = "until_revoked"  # kept until a tombstone replaces the record
    EXPIRES_AT = "expires_at"  # dropped after expires_at_unix


@dataclass(frozen=True, slots=True)
class Retention:
    kind: RetentionKind
    expires_at_unix: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, RetentionKind):
            raise InvalidField("retention", f"unknown kind {self.kind!r}")
        value = self.expires_at_unix
        if self.kind is not RetentionKind.EXPIRES_AT:
            if value is not None:
                raise InvalidField("retention", f"{self.kind} takes no expires_at_unix")
            return
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise InvalidField("retention", "expires_at_unix must be a number")
        if not (math.isfinite(value) and 0 <= value <= MAX_EXPIRES_AT_UNIX):
            raise InvalidField("retention", f"expires_at_unix {value!r} out of range")
        object.__setattr__(self, "expires_at_unix", float(value))  # one canonical type

    @classmethod
    def pinned(cls) -> Retention:
        return cls(RetentionKind.PINNED)

    @classmethod
    def until_revoked(cls) -> Retention:
        return cls(RetentionKind.UNTIL_REVOKED)

    @classmethod
    def expires_at(cls, unix_s: float) -> Retention:
        return cls(RetentionKind.EXPIRES_AT, unix_s)

    def to_wire(self) -> dict[str, object]:
        if self.kind is RetentionKind.EXPIRES_AT:
            return {"kind": self.kind.value, "expires_at_unix": self.expires_at_unix}
        return {"kind": self.kind.value}

    @classmethod
    def from_wire(cls, obj: object) -> Retention:
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
            raise InvalidField("retention", 'must be an object with a "kind"')
        if extra := set(obj) - {"kind", "expires_at_unix"}:
            raise InvalidField("retention", f"unknown fields {sorted(map(str, extra))}")
        try:
            kind = RetentionKind(obj["kind"])
        except ValueError:
            raise InvalidField("retention", f"unknown kind {obj['kind']!r}") from None
        return cls(kind, obj.get("expires_at_unix"))


_RETENTION_NUMBER_RE = re.compile(r"[0-9]{1,15}(\.[0-9]{1,6})?")


def parse_retention(text: str, now: float) -> Retention:
    """The operator's retention text: ``until_revoked`` | ``pinned`` |
    ``expires_at:<unix seconds>`` (in the future, before the year 10000). One parser
    for ``vigocli swarm filecast distribute --retention``, the server's distribute
    query and a seed-directory sidecar; ``InvalidRetention`` otherwise."""
    if text == RetentionKind.UNTIL_REVOKED.value:
        return Retention.until_revoked()
    if text == RetentionKind.PINNED.value:
        return Retention.pinned()
    kind, sep, when = text.partition(":")
    if kind != RetentionKind.EXPIRES_AT.value or not sep:
        raise InvalidRetention(
            f"retention {text[:60]!r} is not until_revoked, pinned or expires_at:<unix seconds>",
        )
    if not _RETENTION_NUMBER_RE.fullmatch(when):
        raise InvalidRetention(f"expires_at {when[:40]!r} is not Unix seconds")
    value = float(when)
    if not (math.isfinite(value) and value <= MAX_EXPIRES_AT_UNIX):
        raise InvalidRetention(f"expires_at {when} is beyond the year 9999")
    if value <= now:
        raise InvalidRetention(f"expires_at {when} is not in the future")
    return Retention.expires_at(value)


def retention_text(retention: Retention) -> str:
    """The text ``parse_retention`` reads: ``pinned``, ``expires_at:1800000000``."""
    if retention.expires_at_unix is None:
        return retention.kind.value
    # exact, never an exponent (``:g`` gave "1.8e+09", which parse_retention refuses)
    when = f"{retention.expires_at_unix:.6f}".rstrip("0").rstrip(".")
    return f"{retention.kind.value}:{when}"


def _need(ok: object, field: str, problem: str) -> None:
    if not ok:
        raise InvalidField(field, problem)


@dataclass(frozen=True)
class RecordFields:
    """Everything a record says; what the authority signs (see ``canonical_bytes``)."""

    key: str
    blob: str  # SHA-256 hex of the whole blob ("" allowed in a tombstone)
    size_bytes: int
    chunk_bytes: int  # 0 allowed in a tombstone
    chunks_digest: str  # SHA-256 hex of the concatenated raw 32-byte chunk hashes
    targets: tuple[str, ...]
    retention: Retention
    tombstone: bool
    hlc: int
    origin: str  # node id of the signer: "server" or a delegated seeder's UUID

    def __post_init__(self) -> None:
        key, chunk, targets, origin = self.key, self.chunk_bytes, self.targets, self.origin
        ok: object = isinstance(key, str) and 1 <= len(key) <= MAX_KEY_CHARS
        _need(ok, "key", f"must be a string of 1..{MAX_KEY_CHARS} characters")
        ok = _KEY_RE.fullmatch(key) and ".." not in key
        _need(ok, "key", f"{key!r} is not [a-z0-9][a-z0-9._/-]* without '..'")
        _need(isinstance(self.tombstone, bool), "tombstone", "must be true or false")
        empty_ok = self.tombstone  # a revocation need not name a blob or targets
        for name in ("blob", "chunks_digest"):
            value = getattr(self, name)
            ok = isinstance(value, str) and (_HEX64_RE.fullmatch(value) or (empty_ok and not value))
            _need(ok, name, "must be a SHA-256 as 64 lowercase hex digits")
        ok = _is_int(self.size_bytes) and 0 <= self.size_bytes <= MAX_SIZE_BYTES
        _need(ok, "size_bytes", f"must be an integer in 0..2^40, got {self.size_bytes!r}")
        ok = _is_int(chunk) and (
            (MIN_CHUNK_BYTES <= chunk <= MAX_CHUNK_BYTES and chunk & (chunk - 1) == 0)
            or (empty_ok and chunk == 0)
        )
        _need(ok, "chunk_bytes", f"must be a power of two in 64 KiB..16 MiB, got {chunk!r}")
        _need(isinstance(targets, tuple), "targets", "must be a list of paths")
        ok = (0 if empty_ok else 1) <= len(targets) <= MAX_TARGETS
        _need(ok, "targets", f"must hold 1..{MAX_TARGETS} paths")
        for target in targets:
            validate_target(target)
        _need(len(set(targets)) == len(targets), "targets", "lists a path twice")
        _need(isinstance(self.retention, Retention), "retention", "must be a Retention")
        ok = _is_int(self.hlc) and 0 < self.hlc <= MAX_STAMP
        _need(ok, "hlc", "must be a 64-bit hybrid logical clock stamp above 0")
        ok = isinstance(origin, str) and len(origin) <= MAX_ORIGIN_CHARS
        _need(ok and _ORIGIN_RE.fullmatch(origin), "origin", f"{origin!r} is not a node id")


@dataclass(frozen=True)
class Record(RecordFields):
    signature: bytes  # Ed25519 over canonical_bytes(record), by the origin's key

    def __post_init__(self) -> None:
        RecordFields.__post_init__(self)
        ok = isinstance(self.signature, bytes) and len(self.signature) == 64
        _need(ok, "signature", "must be 64 bytes (Ed25519)")


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(RecordFields))
_WIRE_FIELDS = frozenset((*_FIELD_NAMES, "signature"))


def tombstone_fields(key: str, *, hlc: int, origin: str) -> RecordFields:
    """The fields of a revocation of ``key`` (sign them to get the tombstone)."""
    return RecordFields(key, "", 0, 0, "", (), Retention.until_revoked(), True, hlc, origin)


def _body(fields: RecordFields) -> dict[str, object]:
    body = {name: getattr(fields, name) for name in _FIELD_NAMES}
    return body | {"targets": list(fields.targets), "retention": fields.retention.to_wire()}


def canonical_bytes(fields: RecordFields) -> bytes:
    """``vigo-manifest-v1\\n`` + JSON of every field but the signature, sorted keys,
    no spaces, ASCII only: the exact bytes that are signed and verified."""
    text = json.dumps(
        _body(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return DOMAIN + text.encode("ascii")


def sign(
    fields: RecordFields, signer: nacl.signing.SigningKey | Callable[[bytes], bytes]
) -> Record:
    """Sign ``fields`` with an authority key or a signing callable (``FleetCA.sign_record``)."""
    payload = canonical_bytes(fields)
    if isinstance(signer, nacl.signing.SigningKey):
        signature = signer.sign(payload).signature
    else:
        signature = signer(payload)
    values = {name: getattr(fields, name) for name in _FIELD_NAMES}
    return Record(**values, signature=bytes(signature))


def verify(record: Record, authority_keys: Mapping[str, bytes]) -> None:
    """Raise UnknownSigner or BadSignature unless an authority key for ``record.origin``
    signed exactly this record. The mapping holds raw 32-byte Ed25519 public keys."""
    public = authority_keys.get(record.origin)
    if public is None:
        raise UnknownSigner(record.origin)
    try:
        nacl.signing.VerifyKey(public).verify(canonical_bytes(record), record.signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise BadSignature(f"signature by {record.origin!r} does not verify") from exc


def to_wire(record: Record) -> dict[str, object]:
    """The JSON-ready form: every field, signature in standard base64."""
    return {**_body(record), "signature": base64.b64encode(record.signature).decode("ascii")}


def from_wire(obj: object) -> Record:
    """Decode a record from a peer or the store, strictly (RecordRejected on any flaw)."""
    if not isinstance(obj, dict):
        raise MalformedRecord("a record must be a JSON object")
    if unknown := set(obj) - _WIRE_FIELDS:
        raise MalformedRecord(f"unknown fields {sorted(map(str, unknown))}")
    if missing := _WIRE_FIELDS - set(obj):
        raise MalformedRecord(f"missing fields {sorted(missing)}")
    raw_sig, targets = obj["signature"], obj["targets"]
    if not isinstance(raw_sig, str) or len(raw_sig) != 88:
        raise InvalidField("signature", "must be 64 bytes in base64")
    try:
        sig = base64.b64decode(raw_sig, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField("signature", "is not valid base64") from None
    if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
        raise InvalidField("targets", f"must be a list of at most {MAX_TARGETS} paths")
    retention = Retention.from_wire(obj["retention"])
    return Record(**{**obj, "targets": tuple(targets), "retention": retention, "signature": sig})


Stamp = tuple[int, str]  # (hlc, origin): the LWW order of one key's record
Summary = dict[str, Stamp]


def summary_to_wire(summary: Mapping[str, Stamp]) -> dict[str, list[object]]:
    return {key: [hlc, origin] for key, (hlc, origin) in summary.items()}


def summary_from_wire(obj: object) -> Summary:
    """Decode a peer's summary ``{key: [hlc, origin]}`` strictly (MalformedSummary)."""
    if not isinstance(obj, dict) or len(obj) > MAX_SUMMARY_ENTRIES:
        raise MalformedSummary(f"a summary is an object of at most {MAX_SUMMARY_ENTRIES} keys")
    out: Summary = {}
    for key, stamp in obj.items():
        ok_key = isinstance(key, str) and len(key) <= MAX_KEY_CHARS and _KEY_RE.fullmatch(key)
        if not ok_key or ".." in key:
            raise MalformedSummary(f"bad key {key!r}")
        if not (isinstance(stamp, list) and len(stamp) == 2 and _is_int(stamp[0])):
            raise MalformedSummary(f"bad stamp for {key!r}: want [hlc, origin]")
        hlc, origin = stamp
        if not 0 < hlc <= MAX_STAMP or not isinstance(origin, str) or len(origin) > 64:
            raise MalformedSummary(f"bad stamp for {key!r}")
        out[key] = (hlc, origin)
    return out


class Outcome(enum.StrEnum):
    ACCEPTED_NEW = "accepted-new"  # first record for its key
    ACCEPTED_NEWER = "accepted-newer"  # replaced an older record
    STALE = "stale-ignored"  # older than what we hold: nothing changed
    DUPLICATE = "duplicate"  # the record we hold already


@dataclass(frozen=True, slots=True)
class MergeResult:
    outcome: Outcome
    record: Record  # the record offered
    previous: Record | None  # what we held for its key before

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.ACCEPTED_NEW, Outcome.ACCEPTED_NEWER)


def _rank(record: Record) -> tuple[int, str, bytes]:
    return record.hlc, record.origin, hashlib.sha256(canonical_bytes(record)).digest()


def _version_term(record: Record) -> int:
    ident = f"{record.key}\x00{record.hlc}\x00{record.origin}".encode()
    return int.from_bytes(hashlib.sha256(ident).digest()[:8], "big") >> 1


class Manifest:
    """The in-memory manifest of one envoy (see the module docstring's invariants)."""

    def __init__(
        self,
        authority_keys: Mapping[str, bytes],
        *,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        tombstone_keep_ms: int = DEFAULT_TOMBSTONE_KEEP_MS,
    ) -> None:
        for origin, public in authority_keys.items():
            if not isinstance(public, bytes) or len(public) != 32:
                raise ValueError(f"authority key for {origin!r} is not 32 bytes")
        self._keys = dict(authority_keys)
        self.max_drift_ms = max_drift_ms
        self.tombstone_keep_ms = tombstone_keep_ms
        self._records: dict[str, Record] = {}
        self._version = 0

    def check(self, record: Record, now_ms: int | None) -> MergeResult:
        """What ``merge`` would do, without doing it; raises RecordRejected the same
        way. ``now_ms=None`` skips the far-future check (see ``restore``)."""
        held = self._records.get(record.key)
        if held is not None and held == record:
            return MergeResult(Outcome.DUPLICATE, record, held)
        if now_ms is not None and (ahead := wall_ms_of(record.hlc) - now_ms) > self.max_drift_ms:
            raise FarFutureRecord(ahead, self.max_drift_ms)
        verify(record, self._keys)
        if held is None:
            return MergeResult(Outcome.ACCEPTED_NEW, record, None)
        mine, theirs = _rank(held), _rank(record)
        if theirs > mine:
            return MergeResult(Outcome.ACCEPTED_NEWER, record, held)
        return MergeResult(Outcome.DUPLICATE if theirs == mine else Outcome.STALE, record, held)

    def merge(self, record: Record, now_ms: int) -> MergeResult:
        """Merge one record from a peer or the authority; the state changes only if
        the result is ``accepted``. Raises RecordRejected (nothing changes)."""
        return self._apply(self.check(record, now_ms))

    def restore(self, record: Record) -> MergeResult:
        """Merge a record from the envoy's own store: signature checked, far-future
        check skipped (it was done on arrival; our clock may have gone back since)."""
        return self._apply(self.check(record, None))

    def _apply(self, result: MergeResult) -> MergeResult:
        if result.accepted:
            self._set(result.record.key, result.previous, result.record)
        return result

    def revert(self, result: MergeResult) -> None:
        """Undo an accepted merge. Only for the last merges, undone newest first."""
        if result.accepted:
            self._set(result.record.key, result.record, result.previous)

    def _set(self, key: str, old: Record | None, new: Record | None) -> None:
        if old is not None:
            self._version ^= _version_term(old)
        if new is not None:
            self._version ^= _version_term(new)
            self._records[key] = new
        else:
            self._records.pop(key, None)

    @property
    def version(self) -> int:
        """0 ≤ version < 2^63; equal on two envoys iff they hold the same stamps."""
        return self._version

    def get(self, key: str) -> Record | None:
        return self._records.get(key)

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[Record]:
        """Every record held, tombstones included, sorted by key."""
        return [self._records[k] for k in sorted(self._records)]

    def live_records(self) -> list[Record]:
        """The records that are not tombstones, sorted by key."""
        return [r for r in self.records() if not r.tombstone]

    def max_hlc(self) -> int:
        """The greatest stamp held (0 if none): a signer's HLC must start above it."""
        return max((r.hlc for r in self._records.values()), default=0)

    def summary(self) -> Summary:
        """``{key: (hlc, origin)}`` for every record held: what a peer needs to tell
        what we lack."""
        return {key: (r.hlc, r.origin) for key, r in self._records.items()}

    def missing_for(self, their: Mapping[str, Stamp]) -> list[Record]:
        """The records a peer with summary ``their`` lacks or holds an older one of."""
        return [
            r
            for key, r in sorted(self._records.items())
            if key not in their or (r.hlc, r.origin) > their[key]
        ]

    def wanted_from(self, their: Mapping[str, Stamp]) -> list[str]:
        """The keys for which a peer with summary ``their`` holds something newer."""
        wanted = []
        for key, stamp in sorted(their.items()):
            held = self._records.get(key)
            if held is None or (held.hlc, held.origin) < stamp:
                wanted.append(key)
        return wanted

    def expire_tombstones(self, now_ms: int, keep_ms: int | None = None) -> list[Record]:
        """Forget tombstones whose HLC is at least ``keep_ms`` (default: the manifest's
        ``tombstone_keep_ms``, 30 days) old; returns them."""
        keep = self.tombstone_keep_ms if keep_ms is None else keep_ms
        gone = [r for r in self.records() if r.tombstone and now_ms - wall_ms_of(r.hlc) >= keep]
        for record in gone:
            self._set(record.key, record, None)
        return gone
