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
- Limits: a line holds at most ``max_line_bytes`` bytes before its ``\\n`` (exactly that
  many is accepted, one more is ``line_too_long``); JSON nests at most ``MAX_DEPTH`` deep
  and has no NaN or Infinity (``parse_error``); integers fit in signed 64 bits and strings
  hold no lone UTF-16 surrogate (``invalid_params`` inside ``params``, else
  ``invalid_request``).
- Replies come in the order of the requests; events may come between them. After
  ``subscribe``, a client too slow to keep up gets one ``events_dropped`` event
  (``{"dropped": N}``) and its subscription ends; it may subscribe again.

The server side of a connection is ``ServerProtocol``, the client side ``ClientProtocol``:
both turn bytes into messages and messages into bytes, and leave the I/O to the caller.

Error codes (``ERROR_CODES``) are a small fixed table; clients branch on the code and
show the message.
"""

from __future__ import annotations

import itertools
import json
import math
import re
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
    "unavailable": "the daemon cannot do this now (stopping, the database is unreachable or "
    "its disk is full, or another dependency is down)",
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


# Limits on what a line may contain, checked before anything else sees it: JSON nested
# deeper than this is refused before ``json.loads`` recurses; integers must fit SQLite's
# signed 64 bits; strings must be real Unicode (a lone UTF-16 surrogate such as
# ``"\\ud800"`` parses, but can be neither stored nor encoded back as UTF-8).
MAX_DEPTH = 32
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _depth(raw: bytes) -> int:
    """How deeply the JSON text nests (exact for valid JSON; invalid JSON fails to parse anyway)."""
    depth = deepest = 0
    for byte in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw)):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
    return deepest


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _loads(line: bytes) -> Any:
    """UTF-8 JSON, at most ``MAX_DEPTH`` deep, without NaN or Infinity; else ``parse_error``."""
    if _depth(line) > MAX_DEPTH:
        raise ProtocolError("parse_error", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("parse_error", f"not valid JSON: {exc}") from None


def flaw(value: Any, where: str) -> str | None:
    """The first value a client may not send (a lone surrogate, an integer beyond 64 bits,
    a float that overflowed to infinity), named by its place, or None."""
    if isinstance(value, str):
        return (
            f"{where} contains a lone UTF-16 surrogate, which is not valid Unicode"
            if _SURROGATE.search(value)
            else None
        )
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (
            None
            if INT_MIN <= value <= INT_MAX
            else f"{where} is outside the signed 64-bit integer range"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is too large a number"
    if isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, dict):
        items = ((f"{where}.{k}", v) for k, v in value.items())
        bad_key = next((k for k in value if _SURROGATE.search(k)), None)
        if bad_key is not None:
            return f"a key in {where} contains a lone UTF-16 surrogate, which is not valid Unicode"
    else:
        return None
    return next((problem for place, v in items if (problem := flaw(v, place))), None)


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    return isinstance(value, str) and len(value) <= 100 and not _SURROGATE.search(value)


def parse_request(line: bytes | TooLong) -> Request:
    """One line from a client; raises ``ProtocolError`` (with the id when known).

    Everything a request carries is checked here, at the edge: the id, the method, and
    every string and number in ``params`` (see ``flaw``), so no method, store or
    encoder ever sees a value it cannot keep or send back.
    """
    if isinstance(line, TooLong):
        raise ProtocolError(
            "line_too_long", f"line of {line.size} bytes dropped; the limit is {line.limit}"
        )
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise ProtocolError("invalid_request", "a request must be a JSON object")
    rid = obj.get("id")
    if not _valid_id(rid):
        raise ProtocolError(
            "invalid_request", "a request needs an id (a 64-bit integer or a short string)"
        )
    if obj.get("type", "request") != "request":
        raise ProtocolError("invalid_request", "expected type 'request'", rid)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise ProtocolError("invalid_request", "a request needs a method name", rid)
    problem = next(
        (
            p
            for k, v in obj.items()
            if k != "params" and (p := flaw(k, "a field name") or flaw(v, k))
        ),
        None,
    )
    if problem:
        raise ProtocolError("invalid_request", problem, rid)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("invalid_params", "params must be a JSON object", rid)
    problem = flaw(params, "params")
    if problem:
        raise ProtocolError("invalid_params", problem, rid)
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
        err = obj.get("error")
        if not isinstance(err, dict):
            err = {}
        return ErrorReply(
            obj.get("id"),
            str(err.get("code", "internal")),
            str(err.get("message", "")),
            err.get("details"),
        )
    if kind == "event":
        return Event(str(obj.get("event", "")), obj.get("data"))
    raise ProtocolError("invalid_request", f"unknown message type {kind!r}")


def encode(message: Message) -> bytes:
    if isinstance(message, Request):
        obj: dict[str, Any] = {
            "type": "request",
            "id": message.id,
            "method": message.method,
            "params": message.params,
        }
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
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # Only data stored before the edge checks existed can hold a lone surrogate: the
        # reply still goes out, as valid UTF-8, with U+FFFD in its place.
        return _SURROGATE.sub("\ufffd", text).encode("utf-8") + b"\n"


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
            f"protocol version {version} is not supported; "
            f"this daemon speaks {list(SUPPORTED_VERSIONS)}",
            id,
            {"supported": list(SUPPORTED_VERSIONS)},
        )
    return version


class ServerProtocol:
    """The server side of one connection: bytes in, what to do with each line out.

    ``receive_data`` turns the client's bytes into a list of actions, in order: a
    ``Request`` for the server to run (never ``hello``, and only after a successful one),
    or a ready ``Reply``/``ErrorReply`` to send as it is (hello's answer, a bad line's
    error, ``hello_required``). It does no I/O and keeps no other state.
    """

    def __init__(
        self, methods: list[str], server_version: str, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        self._splitter = LineSplitter(max_line_bytes)
        self._hello = {
            "server": "kuloo-daemon",
            "server_version": server_version,
            "methods": sorted({"hello", *methods}),
        }
        self.greeted = False

    def receive_data(self, data: bytes) -> list[Request | Reply | ErrorReply]:
        return [self._line(line) for line in self._splitter.feed(data)]

    def _line(self, line: bytes | TooLong) -> Request | Reply | ErrorReply:
        try:
            request = parse_request(line)
            if request.method == "hello":
                version = check_hello(request.params, request.id)
                self.greeted = True
                return Reply(request.id, {"version": version, **self._hello})
            if not self.greeted:
                raise ProtocolError(
                    "hello_required", "send hello with your protocol version first", request.id
                )
        except ProtocolError as exc:
            return error_reply(exc)
        return request


class ClientProtocol:
    """The client side of one connection: requests out as bytes, server lines in as messages.

    Shared by ``kuloo-ctl``'s blocking client and the TUI's asyncio client. ``hello()``
    must be the first request sent; ``request()`` numbers the others. ``receive_data``
    returns, in order, ``Event``s and the ``Reply``/``ErrorReply`` of each request, each
    correlated with a request still waiting for its answer: an error the server could not
    tie to a line it read (``"id": null``) belongs to the oldest request waiting, or, with
    none waiting, is about the connection itself. A reply to nothing asked, or a line
    that is not the protocol, raises ``ProtocolError``.
    After the hello reply, ``server`` holds what the daemon said about itself.
    """

    def __init__(
        self, client_name: str = "client", max_line_bytes: int = 16 * MAX_LINE_BYTES
    ) -> None:
        self.client_name = client_name
        self._splitter = LineSplitter(max_line_bytes)
        self._ids = itertools.count(1)
        self._waiting: dict[Any, str] = {}  # id -> method, in the order sent
        self.server: dict[str, Any] | None = None

    def hello(self, version: int = PROTOCOL_VERSION) -> tuple[Any, bytes]:
        return self._send(hello(0, self.client_name, version))

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[Any, bytes]:
        """The id and bytes of a new request; ``ValueError`` for params the server would refuse
        as unreadable (check user input with ``flaw`` first)."""
        problem = flaw(params or {}, "params")
        if problem:
            raise ValueError(problem)
        return self._send(Request(next(self._ids), method, params or {}))

    def _send(self, request: Request) -> tuple[Any, bytes]:
        if request.id in self._waiting:
            raise ValueError(f"request id {request.id!r} is already waiting for its reply")
        data = encode(request)
        self._waiting[request.id] = request.method
        return request.id, data

    @property
    def waiting(self) -> list[Any]:
        return list(self._waiting)

    def receive_data(self, data: bytes) -> list[Reply | ErrorReply | Event]:
        out: list[Reply | ErrorReply | Event] = []
        for line in self._splitter.feed(data):
            if isinstance(line, TooLong):
                raise ProtocolError("line_too_long", f"the server sent a line of {line.size} bytes")
            out.append(self._message(parse_message(line)))
        return out

    def _message(self, message: Reply | ErrorReply | Event) -> Reply | ErrorReply | Event:
        if isinstance(message, Event):
            return message
        if message.id is None and isinstance(message, ErrorReply):
            if not self._waiting:
                return message  # about the connection itself (the server is closing it)
            message = ErrorReply(
                next(iter(self._waiting)), message.code, message.message, message.details
            )
        method = self._waiting.pop(message.id, None)
        if method is None:
            raise ProtocolError(
                "invalid_request", f"the server answered a request never sent (id {message.id!r})"
            )
        if method == "hello" and isinstance(message, Reply):
            if (
                not isinstance(message.result, dict)
                or message.result.get("version") not in SUPPORTED_VERSIONS
            ):
                raise ProtocolError(
                    "unsupported_version",
                    "the server's hello reply names no version this client speaks",
                )
            self.server = message.result
        return message
