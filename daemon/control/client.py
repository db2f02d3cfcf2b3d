"""A blocking control-protocol client (used by ``kuloo-ctl`` and end-to-end tests).

The protocol itself (hello, ids, telling replies from events) is ``ClientProtocol``,
shared with the TUI's asyncio client; this module only adds a blocking Unix socket.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from typing import Any

from .protocol import ClientProtocol, ErrorReply, Event, ProtocolError, Reply


class ControlError(Exception):
    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


def connect(path: str, timeout: float | None) -> socket.socket:
    """A connected Unix socket with ``timeout`` set on it.

    While the daemon's listen queue is full, a Unix-socket connect with a timeout fails
    at once with EAGAIN (``BlockingIOError``) instead of waiting: retry until ``timeout``.
    A path that exists but is no socket is said so (the kernel says "connection refused").
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    errno.ETIMEDOUT, f"the daemon accepted no connection for {timeout}s (busy?)"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        except OSError as exc:
            sock.close()
            try:
                is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
            except OSError:
                raise exc from None
            if not is_socket:
                raise OSError(errno.ENOTSOCK, f"{path} is not a socket") from None
            raise


class ControlClient:
    """``with ControlClient(path) as c: c.call("status")``; events seen meanwhile collect in ``events``."""

    def __init__(
        self, path: str, *, timeout: float | None = 30.0, client_name: str = "kuloo-ctl"
    ) -> None:
        self.sock = connect(path, timeout)
        self.protocol = ClientProtocol(client_name)
        self._inbox: list[Reply | ErrorReply | Event] = []
        self.events: list[Event] = []
        try:
            self._call(*self.protocol.hello())
        except BaseException:
            self.sock.close()
            raise
        self.server: dict[str, Any] = self.protocol.server or {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_message(self) -> Reply | ErrorReply | Event:
        """The next message; ``ConnectionError`` when the daemon hangs up, ``ProtocolError``
        when what it sent is not the control protocol."""
        while not self._inbox:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            self._inbox += self.protocol.receive_data(data)
        return self._inbox.pop(0)

    def _call(self, request_id: Any, data: bytes) -> Any:
        self.sock.sendall(data)
        while True:
            message = self.read_message()
            if isinstance(message, Event):
                self.events.append(message)
            elif message.id != request_id:
                # an id-less error with nothing waiting: the daemon is closing the connection
                assert isinstance(message, ErrorReply)
                raise ControlError(message.code, message.message, message.details)
            elif isinstance(message, ErrorReply):
                raise ControlError(message.code, message.message, message.details)
            else:
                return message.result

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self._call(*self.protocol.request(method, params))


__all__ = ["ControlClient", "ControlError", "ProtocolError", "connect"]
