"""The puddle on a running envoy: people's unlocked keys, peer-pair, member-list sync.

``PuddleService`` is started by the daemon with ``await nursery.start(service.run)``;
it adds two routes to the peer channel (mutual TLS, TCP 1531)::

    POST /swarm/v1/puddle/pair   {"code": "NNNN-NNNN"}
         → {"identity": <wrapped, base64>, "members": <signed list>}
    POST /swarm/v1/puddle/state  {"identity": …, "members": …}   (push-pull)
         → our {"identity", "members"} for that puddle, after merging theirs

Every method a person reaches (through the control socket) takes the caller's uid from
``SO_PEERCRED`` and acts on that uid's own puddle only — there is no argument that
names another person. Which local person holds a puddle (for peer requests, which
name a puddle by public key) is kept in ``<swarm>/puddles.json`` (public key → uid).

The passphrase never reaches this process: the CLI unwraps with it and hands over the
key (``unlock``) or a new wrapping (``init``, ``rotate``). Codes are never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from .. import http11
from ..node import SwarmNode, vars_of
from ..peers import PeerView
from .errors import (
    BadMemberList,
    CorruptIdentity,
    NoPuddle,
    PairingRefused,
    PuddleError,
    PuddleStateError,
)
from .keyring import KeyRing
from .keys import PuddleKey, WrappedIdentity, decode_wrapped, prefer_wrapping
from .members import MemberList, add_member, members_from_wire, resolve
from .pairing import CODE_RE, DEFAULT_MAX_FAILURES, DEFAULT_TTL_S, PairingBook
from .store import Person, Puddle, PuddleDir

log = logging.getLogger(__name__)

PAIR_PATH = "/swarm/v1/puddle/pair"
STATE_PATH = "/swarm/v1/puddle/state"
MAX_BODY = 16 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PuddleConfig:
    pair_ttl_s: float = DEFAULT_TTL_S
    pair_max_failures: int = DEFAULT_MAX_FAILURES
    sync_interval_s: float = 30.0
    request_timeout_s: float = 10.0
    reap_tick_s: float = 1.0


@dataclass(slots=True)
class PuddleStats:
    pairs_issued: int = 0
    pairs_completed: int = 0
    pair_refusals: int = 0
    syncs: int = 0
    sync_failures: int = 0
    state_refusals: int = 0
    lists_merged: int = 0
    wrappings_merged: int = 0
    idle_locks: int = 0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrapped_from_b64(text: Any) -> WrappedIdentity:
    if not isinstance(text, str) or len(text) > 1024:
        raise CorruptIdentity("identity must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptIdentity("identity is not valid base64") from exc
    return decode_wrapped(raw)


def decode_state(obj: Any) -> Puddle:
    """Strictly decode ``{"identity", "members"}`` (a state push or a pairing answer)."""
    if not isinstance(obj, dict) or set(obj) != {"identity", "members"}:
        raise BadMemberList('expected {"identity": …, "members": …}')
    identity = wrapped_from_b64(obj["identity"])
    members = members_from_wire(obj["members"], puddle=identity.public_key)
    return Puddle(identity, members)


def encode_state(puddle: Puddle) -> dict[str, Any]:
    return {"identity": b64(puddle.identity.raw), "members": puddle.members.to_wire()}


class PuddleService:
    def __init__(
        self,
        node: SwarmNode,
        index_file: Path,
        people: Callable[[int], Person],
        config: PuddleConfig | None = None,
    ) -> None:
        self.node = node
        self.index_file = index_file
        self.people = people
        self.config = config or PuddleConfig()
        self.keyring = KeyRing()
        self.book = PairingBook(self.config.pair_ttl_s, self.config.pair_max_failures)
        self.stats = PuddleStats()
        self.index: dict[str, int] = self._load_index()
        self._lock = trio.Lock()  # one change to puddle files at a time
        self._wake = trio.Event()
        self._in_flight: set[tuple[uuid.UUID, str]] = set()
        self._listeners: list[Callable[[], None]] = []
        node.router.add("POST", PAIR_PATH, self._pair_handler, max_body=MAX_BODY)
        node.router.add("POST", STATE_PATH, self._state_handler, max_body=MAX_BODY)

    # ---------------------------------------------------------------- the index

    def _load_index(self) -> dict[str, int]:
        try:
            obj = json.loads(self.index_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("puddle index %s unreadable (%s): starting empty", self.index_file, exc)
            return {}
        if not isinstance(obj, dict) or not all(
            isinstance(k, str) and len(k) == 64 and isinstance(v, int) and v >= 0
            for k, v in obj.items()
        ):
            log.warning("puddle index %s malformed: starting empty", self.index_file)
            return {}
        return dict(obj)

    def _save_index(self) -> None:
        from .. import pki

        pki.write_secret_file(self.index_file, json.dumps(self.index, sort_keys=True).encode())

    async def _remember(self, uid: int, public_hex: str) -> None:
        stale = [k for k, v in self.index.items() if v == uid and k != public_hex]
        if self.index.get(public_hex) == uid and not stale:
            return
        for k in stale:
            del self.index[k]
        self.index[public_hex] = uid
        await trio.to_thread.run_sync(self._save_index)

    async def _forget(self, public_hex: str) -> None:
        if self.index.pop(public_hex, None) is not None:
            await trio.to_thread.run_sync(self._save_index)

    # ------------------------------------------------------------ file access

    async def _io(self, uid: int, fn: Callable[[PuddleDir], T]) -> T:
        person = self.people(uid)
        return await trio.to_thread.run_sync(fn, PuddleDir(person))

    async def puddle_of(self, uid: int) -> Puddle:
        """The person's puddle (public key and members), locked or not."""
        puddle = await self._io(uid, PuddleDir.read)
        await self._remember(uid, puddle.public_hex)
        return puddle

    def unlocked_key(self, uid: int) -> PuddleKey | None:
        """The person's key while unlocked (a use: it resets the idle timer)."""
        return self.keyring.get(uid, trio.current_time())

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever a puddle changes here (unlock, lock, a merged
        list or wrapping, init, join): lockbox reacts to an unlock at once."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self._wake.set()
        for listener in self._listeners:
            listener()

    def _own(self) -> uuid.UUID:
        return self.node.identity.uuid

    # ------------------------------------------------------- person operations

    async def status(self, uid: int) -> dict[str, Any]:
        now = trio.current_time()
        try:
            puddle = await self.puddle_of(uid)
        except NoPuddle:
            return {"state": "none", "envoy": str(self._own())}
        held = self.keyring.peek(uid, now)
        pairing = self.book.view(uid, now)
        idle = None
        if held is not None and (deadline := held.expires_at()) is not None:
            idle = round(deadline - now, 1)
        return {
            "state": "unlocked" if held else "locked",
            "envoy": str(self._own()),
            "puddle": puddle.public_hex,
            "wrap_version": puddle.identity.wrap_version,
            "members": self._describe(puddle.members),
            "members_version": puddle.members.version,
            "idle_timeout_s": held.idle_timeout_s if held else None,
            "locks_in_s": idle,
            "pairing": None if pairing is None else vars_of(pairing),
        }

    def _describe(self, members: MemberList) -> list[dict[str, Any]]:
        names = {p.uuid: p.hostname for p in self.node.peers()}
        names[self._own()] = self.node.identity.hostname
        return [
            {"uuid": str(m), "hostname": names.get(m), "this_envoy": m == self._own()}
            for m in members.members
        ]

    async def read(self, uid: int) -> dict[str, Any]:
        puddle = await self.puddle_of(uid)
        return {**encode_state(puddle), "puddle": puddle.public_hex}

    async def members(self, uid: int) -> dict[str, Any]:
        puddle = await self.puddle_of(uid)  # read() verified the signature
        return {
            "puddle": puddle.public_hex,
            "version": puddle.members.version,
            "signature": puddle.members.signature.hex(),
            "verified": True,
            "members": self._describe(puddle.members),
            "signed_list": puddle.members.to_wire(),
        }

    async def init(self, uid: int, state: Any) -> dict[str, Any]:
        new = decode_state(state)
        if new.members.members != (self._own(),):
            raise BadMemberList("a new puddle's member list must hold exactly this envoy")
        if new.identity.wrap_version != 1 or new.members.version != 1:
            raise BadMemberList("a new puddle starts at version 1")
        async with self._lock:
            await self._io(uid, functools.partial(PuddleDir.create, puddle=new))
            await self._remember(uid, new.public_hex)
        log.info("puddle %s… created for uid %d", new.public_hex[:16], uid)
        self._changed()
        return {"puddle": new.public_hex}

    async def unlock(self, uid: int, seed: bytes, idle_timeout_s: float) -> dict[str, Any]:
        puddle = await self.puddle_of(uid)
        key = PuddleKey(seed)
        if key.public != puddle.identity.public_key:
            raise PuddleError("that key does not belong to your puddle")
        self.keyring.put(uid, key, idle_timeout_s, trio.current_time())
        log.info("puddle %s… unlocked for uid %d", puddle.public_hex[:16], uid)
        self._changed()  # an unlocked member can repair member-list conflicts
        return {"puddle": puddle.public_hex, "idle_timeout_s": idle_timeout_s}

    async def lock(self, uid: int) -> dict[str, Any]:
        was = self.keyring.forget(uid)
        self.book.cancel(uid, trio.current_time())
        if was:
            log.info("puddle of uid %d locked", uid)
            self._changed()
        return {"was_unlocked": was}

    async def pair(self, uid: int) -> dict[str, Any]:
        puddle = await self.puddle_of(uid)
        if self.unlocked_key(uid) is None:
            raise PuddleStateError("your puddle is locked here: run `vigo swarm puddle unlock`")
        now = trio.current_time()
        code, expires_at = self.book.issue(uid, now)
        self.stats.pairs_issued += 1
        log.info("pairing opened for puddle %s… (uid %d)", puddle.public_hex[:16], uid)
        return {
            "code": code,
            "expires_in_s": round(expires_at - now, 1),
            "envoy": self.node.identity.hostname,
            "envoy_uuid": str(self._own()),
        }

    async def rotate(self, uid: int, identity_b64: Any) -> dict[str, Any]:
        new = wrapped_from_b64(identity_b64)
        async with self._lock:
            puddle = await self.puddle_of(uid)
            if new.public_key != puddle.identity.public_key:
                raise CorruptIdentity("the new wrapping holds another key")
            if new.wrap_version <= puddle.identity.wrap_version:
                raise PuddleStateError(
                    f"wrap version {new.wrap_version} is not newer than "
                    f"{puddle.identity.wrap_version}"
                )
            await self._io(uid, functools.partial(PuddleDir.replace, identity=new))
        self._changed()
        log.info("puddle %s… rewrapped (version %d)", puddle.public_hex[:16], new.wrap_version)
        return {"puddle": puddle.public_hex, "wrap_version": new.wrap_version}

    async def join(self, uid: int, envoy: str, code: str) -> dict[str, Any]:
        if not CODE_RE.match(code):
            raise PairingRefused("malformed", "a pairing code is 8 digits, written NNNN-NNNN")
        if await self._io(uid, PuddleDir.exists):
            raise PuddleStateError(
                "you already have a puddle on this envoy; joining would replace it"
            )
        peer = self._find_peer(envoy)
        body = json.dumps({"code": code}).encode()
        try:
            async with await self.node.dial(peer) as conn:
                resp = await conn.request(
                    "POST", PAIR_PATH, body=body, timeout_s=self.config.request_timeout_s
                )
        except http11.ClientError as exc:
            raise PuddleStateError(f"could not reach {envoy}: {exc}") from exc
        answer = _json_or_none(resp.body)
        if resp.status != 200:
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            code_name = str(err.get("code", ""))
            reason = code_name.removeprefix("pairing_") if code_name.startswith("pairing_") else ""
            message = str(err.get("message", f"answered {resp.status}"))[:200]
            raise PairingRefused(reason or "refused", f"{peer.hostname or envoy}: {message}")
        new = decode_state(answer)
        if self._own() not in new.members:
            raise BadMemberList("the issuing envoy's member list does not include this envoy")
        async with self._lock:
            await self._io(uid, functools.partial(PuddleDir.create, puddle=new))
            await self._remember(uid, new.public_hex)
        self._changed()
        log.info("joined puddle %s… through %s (uid %d)", new.public_hex[:16], peer.uuid, uid)
        return {
            "puddle": new.public_hex,
            "issuer": peer.hostname or str(peer.uuid),
            "members": self._describe(new.members),
        }

    def _find_peer(self, envoy: str) -> PeerView:
        peers = self.node.peers()
        exact = [p for p in peers if str(p.uuid) == envoy.lower() or p.hostname == envoy]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            uuids = ", ".join(str(p.uuid) for p in exact)
            raise PuddleStateError(f"several peers are called {envoy!r}: name one of {uuids}")
        raise PuddleStateError(f"no confirmed peer is called {envoy!r} (see `vigo swarm peers`)")

    # ------------------------------------------------------------ peer channel

    async def _pair_handler(self, request: http11.Request) -> http11.Response:
        assert request.peer is not None and request.peer.uuid is not None  # admitted
        joiner = request.peer.uuid
        body = request.json()
        code = body.get("code") if isinstance(body, dict) else None
        now = trio.current_time()
        try:
            owner = self.book.redeem(code if isinstance(code, str) else "", now)
        except PairingRefused as exc:
            self.stats.pair_refusals += 1
            log.warning("pairing: refused a code from %s: %s", request.peer.label, exc.reason)
            raise http11.HTTPError(403, f"pairing_{exc.reason}", str(exc)) from exc
        uid = owner
        key = self.keyring.get(uid, now)
        if key is None:
            raise http11.HTTPError(
                409, "pairing_locked", "the puddle was locked on the issuing envoy; pair again"
            )
        try:
            async with self._lock:
                puddle = await self._io(uid, PuddleDir.read)
                members = add_member(key, puddle.members, joiner)
                if members is not puddle.members:
                    await self._io(uid, functools.partial(PuddleDir.replace, members=members))
        except PuddleError as exc:
            log.warning("pairing: cannot add %s: %s", request.peer.label, exc)
            raise http11.HTTPError(
                409, "pairing_failed", "the issuing envoy's puddle is unusable"
            ) from exc
        self.stats.pairs_completed += 1
        self._changed()
        log.info("pairing: %s joined puddle %s…", request.peer.label, puddle.public_hex[:16])
        return http11.json_response(encode_state(Puddle(puddle.identity, members)))

    async def _state_handler(self, request: http11.Request) -> http11.Response:
        assert request.peer is not None and request.peer.uuid is not None  # admitted
        try:
            theirs = decode_state(request.json())
        except (BadMemberList, CorruptIdentity) as exc:
            self.stats.state_refusals += 1
            raise http11.HTTPError(400, "bad_state", str(exc)) from exc
        refusal = http11.HTTPError(403, "not_member", "not a member of that puddle here")
        uid = self.index.get(theirs.public_hex)
        if uid is None:
            self.stats.state_refusals += 1
            raise refusal
        try:
            ours = await self._merge(uid, theirs, str(request.peer.uuid))
        except PuddleError as exc:
            self.stats.state_refusals += 1
            log.debug("puddle state from %s not merged: %s", request.peer.label, exc)
            raise refusal from exc
        if request.peer.uuid not in ours.members:
            self.stats.state_refusals += 1
            log.info("puddle state: %s is not a member; refused", request.peer.label)
            raise refusal
        return http11.json_response(encode_state(ours))

    async def _merge(self, uid: int, theirs: Puddle, source: str) -> Puddle:
        """Fold a peer's (verified) state into the person's puddle; ours after merging."""
        async with self._lock:
            try:
                ours = await self._io(uid, PuddleDir.read)
            except NoPuddle:
                await self._forget(theirs.public_hex)
                raise
            if ours.identity.public_key != theirs.identity.public_key:
                raise PuddleStateError("the index is stale: that person has another puddle")
            held = self.keyring.peek(uid, trio.current_time())
            members = resolve(ours.members, theirs.members, held.key if held else None)
            identity = prefer_wrapping(ours.identity, theirs.identity)
            new_members = members if members != ours.members else None
            new_identity = identity if identity is not ours.identity else None
            if new_members is None and new_identity is None:
                return ours
            await self._io(
                uid,
                functools.partial(PuddleDir.replace, identity=new_identity, members=new_members),
            )
        self.stats.lists_merged += new_members is not None
        self.stats.wrappings_merged += new_identity is not None
        log.info(
            "puddle %s…: merged from %s: member list version %d, wrap version %d",
            ours.public_hex[:16],
            source,
            members.version,
            identity.wrap_version,
        )
        self._changed()
        return Puddle(identity, members)

    async def _exchange(self, peer: PeerView, uid: int, puddle: Puddle) -> None:
        key = (peer.uuid, puddle.public_hex)
        self._in_flight.add(key)
        self.stats.syncs += 1
        try:
            async with await self.node.dial(peer) as conn:
                resp = await conn.request(
                    "POST",
                    STATE_PATH,
                    body=json.dumps(encode_state(puddle)).encode(),
                    timeout_s=self.config.request_timeout_s,
                )
            if resp.status != 200:
                raise http11.ClientError(f"state answered {resp.status}")
            theirs = decode_state(_json_or_none(resp.body))
            if theirs.identity.public_key != puddle.identity.public_key:
                raise BadMemberList("answered with another puddle")
            await self._merge(uid, theirs, str(peer.uuid))
        except (http11.ClientError, PuddleError) as exc:
            self.stats.sync_failures += 1
            log.debug("puddle sync with %s failed: %s", peer.uuid, exc)
        finally:
            self._in_flight.discard(key)

    # --------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reaper)
            nursery.start_soon(self._sync_loop, nursery)
            task_status.started()

    async def _reaper(self) -> None:
        while True:
            for uid in self.keyring.expire(trio.current_time()):
                self.stats.idle_locks += 1
                self.book.cancel(uid, trio.current_time())
                log.info("puddle of uid %d locked after its idle timeout", uid)
            await trio.sleep(self.config.reap_tick_s)

    async def _sync_loop(self, nursery: trio.Nursery) -> None:
        while True:
            self._wake = trio.Event()
            peers = self.node.peers()
            for public_hex, uid in list(self.index.items()):
                try:
                    puddle = await self._io(uid, PuddleDir.read)
                except PuddleError as exc:
                    log.debug("puddle sync: uid %d: %s", uid, exc)
                    continue
                for peer in peers:
                    key = (peer.uuid, public_hex)
                    if peer.uuid in puddle.members and key not in self._in_flight:
                        nursery.start_soon(self._exchange, peer, uid, puddle)
            with trio.move_on_after(self.config.sync_interval_s):
                await self._wake.wait()


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
