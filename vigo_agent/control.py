"""The local control socket: how the CLI (root or a person) talks to the daemon.

A unix stream socket (default ``<state>/control.sock``, mode 0666: anyone local may
connect; what they may *do* is decided per operation from their uid). The caller's
uid/gid/pid come from the kernel (``SO_PEERCRED``), never from the request.

Protocol: one JSON object per line each way.
``{"op": "<name>", "args": {...}}`` → ``{"ok": true, "result": …}`` or
``{"ok": false, "error": {"code": "…", "message": "…"}}``.

Only operations registered in the allowlist answer (Salt CVE-2020-11651: never
dispatch on a name the caller chose). Requests are capped at 64 KiB.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Caller:
    uid: int
    gid: int
    pid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0


class ControlError(Exception):
    """An operation refused or failed; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Operation = Callable[[Caller, dict[str, Any]], Awaitable[Any]]


def peer_credentials(sock: socket.socket) -> Caller:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Caller(uid=uid, gid=gid, pid=pid)


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """Pure: a request line → (op, args), or ``ControlError('bad_request')``."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError("bad_request", f"request is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise ControlError("bad_request", 'request must be {"op": "<name>", "args": {...}}')
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ControlError("bad_request", "args must be an object")
    return obj["op"], args


class ControlServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._ops: dict[str, Operation] = {}
        self.requests = 0

    def register(self, name: str, op: Operation) -> None:
        self._ops[name] = op

    async def dispatch(self, caller: Caller, line: bytes) -> dict[str, Any]:
        try:
            name, args = decode_request(line)
            op = self._ops.get(name)
            if op is None:
                raise ControlError(
                    "unknown_op",
                    f"unknown operation {name!r} (known: {', '.join(sorted(self._ops))})",
                )
            return {"ok": True, "result": await op(caller, args)}
        except ControlError as exc:
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        except Exception:
            log.exception("control operation failed")
            return {"ok": False, "error": {"code": "internal", "message": "internal error"}}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            if self.path.is_socket():
                self.path.unlink()  # a stale socket from a previous run
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await sock.bind(str(self.path))
            # anyone local may connect; each operation checks the SO_PEERCRED uid
            os.chmod(self.path, 0o666)  # noqa: S103
            sock.listen(64)
            listener = trio.SocketListener(sock)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.serve_listeners, self._handle, [listener])
                    task_status.started()
            finally:
                with contextlib.suppress(OSError):
                    self.path.unlink()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            caller = peer_credentials(stream.socket._sock)  # type: ignore[attr-defined]
            buf = b""
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                while b"\n" not in buf:
                    try:
                        data = await stream.receive_some(4096)
                    except (trio.BrokenResourceError, OSError):
                        return
                    if not data:
                        break
                    buf += data
                    if len(buf) > MAX_REQUEST_BYTES:
                        reply = {
                            "ok": False,
                            "error": {"code": "too_large", "message": "request over 64 KiB"},
                        }
                        await _send(stream, reply)
                        return
                self.requests += 1
                reply = await self.dispatch(caller, buf.split(b"\n", 1)[0])
                await _send(stream, reply)


async def _send(stream: trio.SocketStream, reply: dict[str, Any]) -> None:
    with contextlib.suppress(trio.BrokenResourceError, OSError):
        await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")


def call(
    path: Path, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 30.0
) -> Any:
    """Blocking client for the CLI: one request, one answer. Raises ``ControlError``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError("not_running", f"no daemon is listening on {path}") from exc
        except PermissionError as exc:
            raise ControlError("permission", f"cannot open {path}: permission denied") from exc
        sock.sendall(json.dumps({"op": op, "args": args or {}}).encode() + b"\n")
        buf = b""
        try:
            while b"\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
        except TimeoutError as exc:
            raise ControlError(
                "timeout", f"the daemon did not answer within {timeout_s:g} s"
            ) from exc
    try:
        reply = json.loads(buf)
    except json.JSONDecodeError as exc:
        raise ControlError("bad_reply", "the daemon's answer is not JSON") from exc
    if not reply.get("ok"):
        err = reply.get("error", {})
        raise ControlError(str(err.get("code", "error")), str(err.get("message", "failed")))
    return reply.get("result")
