"""A blocking control-protocol client (used by ``kuloo-ctl`` and end-to-end tests)."""

from __future__ import annotations

import itertools
import socket
from typing import Any

from .protocol import (
    MAX_LINE_BYTES,
    ErrorReply,
    Event,
    LineSplitter,
    Reply,
    Request,
    TooLong,
    encode,
    hello,
    parse_message,
)


class ControlError(Exception):
    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


class ControlClient:
    def __init__(self, path: str, *, timeout: float | None = 30.0, client_name: str = "kuloo-ctl") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._splitter = LineSplitter(16 * MAX_LINE_BYTES)
        self._lines: list[bytes] = []
        self._ids = itertools.count(1)
        self.events: list[Event] = []
        self.server = self.call_request(hello(0, client_name))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self) -> Reply | ErrorReply | Event:
        while not self._lines:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            for line in self._splitter.feed(data):
                if isinstance(line, TooLong):
                    raise ConnectionError("the daemon sent an over-long line")
                self._lines.append(line)
        return parse_message(self._lines.pop(0))

    def read_reply(self) -> Reply | ErrorReply:
        while True:
            message = self.read_message()
            if isinstance(message, Event):
                self.events.append(message)
                continue
            return message

    def call_request(self, request: Request) -> Any:
        self.send_raw(encode(request))
        reply = self.read_reply()
        if isinstance(reply, ErrorReply):
            raise ControlError(reply.code, reply.message, reply.details)
        return reply.result

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.call_request(Request(next(self._ids), method, params or {}))
