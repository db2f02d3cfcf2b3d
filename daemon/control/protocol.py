"""The control protocol between the daemon and its clients (TUI, kuloo-ctl). Sans-IO.

This module imports no trio, asyncio or Textual: both sides feed it bytes and get
messages back, and turn messages into bytes. It is the protocol's specification.

Wire format: UTF-8 JSON objects, one per line (``\\n``), at most ``MAX_LINE_BYTES``.
Four kinds, told apart by ``type``::

    {"type": "request", "id": 7, "method": "channels.get", "params": {"id": 1}}
    {"type": "reply",   "id": 7, "result": {...}}
    {"type": "error",   "id": 7, "error": {"code": "not_found", "message": "..."}}
    {"type": "event",   "event": "channel.updated", "data": {...}}

- The first request on a connection must be ``hello`` with ``{"version": N}``; the reply
  carries the server's version and method list. Other requests before it get
  ``hello_required``.
- ``id`` is chosen by the client (an integer or a string) and echoed; an error about a
  line that could not be read has ``"id": null``.
- Unknown fields are ignored, on both sides, so either side can grow.
- A bad line (not JSON, too long, not a request, unknown method, wrong parameters) gets
  an error reply; the connection stays open.

Error codes (``ERROR_CODES``) are a small fixed table; clients branch on the code and
show the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_LINE_BYTES = 64 * 1024

ERROR_CODES: dict[str, str] = {
    "parse_error": "the line is not valid UTF-8 JSON",
    "line_too_long": "the line is longer than the server accepts",
    "invalid_request": "the line is not a request object with an id and a method",
    "hello_required": "the first request on a connection must be hello",
    "unsupported_version": "the client's protocol version is not supported",
    "unknown_method": "no such method",
    "invalid_params": "the parameters are missing, of the wrong type or out of range",
    "not_found": "the object named does not exist",
    "conflict": "the change conflicts with existing data",
    "unavailable": "the daemon cannot do this now (stopping, or a dependency is down)",
    "internal": "the daemon failed; the error is in its log",
}


class ProtocolError(Exception):
    """An error to send back as an ``error`` message."""

    def __init__(self, code: str, message: str, id: Any = None, details: Any = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.details = details


@dataclass(frozen=True)
class Request:
    id: Any
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    id: Any
    result: Any


@dataclass(frozen=True)
class ErrorReply:
    id: Any
    code: str
    message: str
    details: Any = None


@dataclass(frozen=True)
class Event:
    event: str
    data: Any = None


Message = Request | Reply | ErrorReply | Event


@dataclass(frozen=True)
class TooLong:
    """Stands in the line stream for a line that was longer than the limit (discarded)."""

    size: int
    limit: int = MAX_LINE_BYTES


class LineSplitter:
    """Bytes in, complete lines out; an over-long line is dropped and reported once."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max = max_line_bytes
        self._buf = bytearray()
        self._discarding = 0  # bytes of an over-long line dropped so far

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        out: list[bytes | TooLong] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                chunk = data[start:]
                if self._discarding:
                    self._discarding += len(chunk)
                else:
                    self._buf += chunk
                    if len(self._buf) > self.max:
                        self._discarding = len(self._buf)
                        self._buf.clear()
                return out
            chunk = data[start:nl]
            start = nl + 1
            if self._discarding:
                out.append(TooLong(self._discarding + len(chunk), self.max))
                self._discarding = 0
                continue
            if len(self._buf) + len(chunk) > self.max:
                out.append(TooLong(len(self._buf) + len(chunk), self.max))
                self._buf.clear()
                continue
            line = bytes(self._buf + chunk) if self._buf else bytes(chunk)
            self._buf.clear()
            if line.strip():
                out.append(line)

    @property
    def pending(self) -> int:
        return len(self._buf) + self._discarding


def _loads(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("parse_error", f"not valid JSON: {exc}") from None


def _valid_id(value: Any) -> bool:
    return (isinstance(value, (int, str)) and not isinstance(value, bool)) and len(str(value)) <= 100


def parse_request(line: bytes | TooLong) -> Request:
    """One line from a client; raises ``ProtocolError`` (with the id when known)."""
    if isinstance(line, TooLong):
        raise ProtocolError("line_too_long", f"line of {line.size} bytes dropped; the limit is {line.limit}")
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_request", "a request must be a JSON object")
    rid = obj.get("id")
    if not _valid_id(rid):
        raise ProtocolError("invalid_request", "a request needs an id (an integer or a short string)")
    if obj.get("type", "request") != "request":
        raise ProtocolError("invalid_request", f"expected type 'request', got {obj.get('type')!r}", rid)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise ProtocolError("invalid_request", "a request needs a method name", rid)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("invalid_params", "params must be a JSON object", rid)
    return Request(rid, method, params)


def parse_message(line: bytes) -> Reply | ErrorReply | Event:
    """One line from the server (client side)."""
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_request", "a server message must be a JSON object")
    kind = obj.get("type")
    if kind == "reply":
        return Reply(obj.get("id"), obj.get("result"))
    if kind == "error":
        err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
        return ErrorReply(obj.get("id"), str(err.get("code", "internal")), str(err.get("message", "")), err.get("details"))
    if kind == "event":
        return Event(str(obj.get("event", "")), obj.get("data"))
    raise ProtocolError("invalid_request", f"unknown message type {kind!r}")


def encode(message: Message) -> bytes:
    if isinstance(message, Request):
        obj: dict[str, Any] = {"type": "request", "id": message.id, "method": message.method, "params": message.params}
    elif isinstance(message, Reply):
        obj = {"type": "reply", "id": message.id, "result": message.result}
    elif isinstance(message, ErrorReply):
        error: dict[str, Any] = {"code": message.code, "message": message.message}
        if message.details is not None:
            error["details"] = message.details
        obj = {"type": "error", "id": message.id, "error": error}
    elif isinstance(message, Event):
        obj = {"type": "event", "event": message.event, "data": message.data}
    else:  # pragma: no cover - a programming error
        raise TypeError(f"cannot encode {message!r}")
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8") + b"\n"


def error_reply(exc: ProtocolError, id: Any = None) -> ErrorReply:
    return ErrorReply(exc.id if exc.id is not None else id, exc.code, exc.message, exc.details)


def hello(id: Any = 0, client: str = "client", version: int = PROTOCOL_VERSION) -> Request:
    return Request(id, "hello", {"version": version, "client": client})


def check_hello(params: dict[str, Any], id: Any = None) -> int:
    """Server side: the version the client asked for, or ``ProtocolError``."""
    version = params.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("invalid_params", "hello needs an integer 'version'", id)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {version} is not supported; this daemon speaks {list(SUPPORTED_VERSIONS)}",
            id,
            {"supported": list(SUPPORTED_VERSIONS)},
        )
    return version
