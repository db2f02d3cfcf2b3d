"""The TUI's asyncio client of the daemon's control socket.

The protocol (hello, ids, telling replies from events) is the daemon's sans-IO
``ClientProtocol``; this module only adds an asyncio Unix socket, a supervisor that keeps
one connection up, and backoff while the daemon is unreachable or restarting.

- ``await client.call(method, params)`` → the result, or ``DaemonError`` (the daemon's
  code and message; ``details["problems"]`` when it lists several). While the daemon is
  unreachable a call fails at once with ``Unreachable``: the UI never waits on a dead
  socket, it shows the banner.
- ``client.listen()`` → an ``asyncio.Queue`` of ``Connected``, ``Disconnected`` and the
  daemon's ``Event``s, in order. After every (re)connection the client subscribes again,
  so a listener refreshes what it shows on ``Connected``.
- ``client.start()`` starts the supervisor on the running loop, ``await client.close()``
  stops it.

Imports only the protocol module of the daemon (tests/test_layering.py): no trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from dataclasses import dataclass, field
from typing import Any

from kuloo_daemon.control.protocol import ClientProtocol, ErrorReply, Event, ProtocolError

__all__ = [
    "Connected",
    "DaemonClient",
    "DaemonError",
    "Disconnected",
    "Event",
    "Unreachable",
    "default_socket_path",
]

DEFAULT_SOCKET = "/run/kuloo/control.sock"


class DaemonError(Exception):
    """The daemon refused or failed a call: its error code and message, shown as they are."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def problems(self) -> list[str]:
        """Every problem the daemon listed (one per line in the UI), else its message."""
        if isinstance(self.details, dict) and isinstance(self.details.get("problems"), list):
            return [str(p) for p in self.details["problems"]]
        return [self.message]


class Unreachable(DaemonError):
    """No connection to the daemon now (not running, restarting, or the connection broke)."""

    def __init__(self, message: str) -> None:
        super().__init__("unreachable", message)


@dataclass(frozen=True)
class Connected:
    server: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Disconnected:
    reason: str
    retry_in: float


def default_socket_path(socket: str | None = None, config: str | None = None) -> str:
    """As ``kuloo-ctl``: --socket, $KULOO_SOCKET, the --config file's ``[control] socket``, the default.

    The configuration is read as plain TOML (the TUI imports nothing of the daemon but
    its protocol), so only the socket key is looked at.
    """
    if socket:
        return socket
    if os.environ.get("KULOO_SOCKET"):
        return os.environ["KULOO_SOCKET"]
    if config:
        import tomllib

        with open(config, "rb") as fh:
            data = tomllib.load(fh)
        value = data.get("control", {}).get("socket")
        if isinstance(value, str) and value:
            return value
    return DEFAULT_SOCKET


class _Connection:
    """One live connection: the stream, its protocol state, the calls waiting for replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = ClientProtocol("kuloo-tui")
        self.pending: dict[Any, asyncio.Future] = {}
        self.lock = asyncio.Lock()

    async def send(self, id_and_bytes: tuple[Any, bytes]) -> asyncio.Future:
        rid, data = id_and_bytes
        future = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        try:
            self.writer.write(data)
            await self.writer.drain()
        except BaseException:
            self.pending.pop(rid, None)
            future.cancel()
            raise
        return future

    def fail_all(self, exc: Exception) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(exc)
                future.exception()  # whoever awaits it still gets it; nobody waiting is no error
        self.pending.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.close()


class DaemonClient:
    # Errors that mean "the daemon is not there (yet)": retried with backoff.
    RETRYABLE = (ConnectionError, FileNotFoundError, TimeoutError, asyncio.IncompleteReadError)

    def __init__(
        self,
        path: str,
        *,
        backoff_start: float = 0.2,
        backoff_max: float = 5.0,
        call_timeout: float = 300.0,
    ) -> None:
        self.path = path
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.call_timeout = call_timeout
        self.server: dict[str, Any] = {}
        self._conn: _Connection | None = None
        self._listeners: list[asyncio.Queue] = []
        self._task: asyncio.Task | None = None
        self._connected: asyncio.Event | None = None  # made on the running loop by start()

    # ------------------------------------------------------------------ public

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def listen(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._listeners.append(queue)
        return queue

    def start(self) -> None:
        if self._task is None:
            self._connected = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name="kuloo-tui-client"
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def wait_connected(self, seconds: float) -> None:
        """Wait until a connection is up (tests, start-up); ``TimeoutError`` otherwise."""
        assert self._connected is not None, "start() first"
        await asyncio.wait_for(self._connected.wait(), seconds)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, seconds: float | None = None
    ) -> Any:
        conn = self._conn
        if conn is None:
            raise Unreachable(f"the daemon at {self.path} is not reachable; reconnecting")
        try:
            request = conn.protocol.request(method, params)
        except ValueError as exc:  # params the daemon could not read back (a lone surrogate, …)
            raise DaemonError("invalid_params", str(exc)) from None
        try:
            async with conn.lock:
                future = await conn.send(request)
        except OSError:
            raise Unreachable(f"the connection to the daemon at {self.path} broke") from None
        try:
            message = await asyncio.wait_for(future, seconds or self.call_timeout)
        except TimeoutError:
            raise DaemonError(
                "timeout",
                f"{method}: no answer from the daemon in {seconds or self.call_timeout:g} s",
            ) from None
        if isinstance(message, ErrorReply):
            raise DaemonError(message.code, message.message, message.details)
        return message.result

    # ------------------------------------------------------------------ supervisor

    def _emit(self, item: Any) -> None:
        for queue in self._listeners:
            queue.put_nowait(item)

    async def _supervise(self) -> None:
        pause = self.backoff_start
        reported = False
        while True:
            try:
                conn = await self._open()
            except (*self.RETRYABLE, ProtocolError, DaemonError, OSError) as exc:
                reason = _describe(exc, self.path)
                if not reported:
                    self._emit(Disconnected(reason, pause))
                    reported = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.backoff_max)
                continue
            pause = self.backoff_start
            reported = False
            self._conn = conn
            assert self._connected is not None  # made by start(), before this task
            self._connected.set()
            self._emit(Connected(self.server))
            reason = await self._read(conn)
            self._conn = None
            self._connected.clear()
            conn.fail_all(Unreachable(f"the connection to the daemon broke: {reason}"))
            conn.close()
            self._emit(Disconnected(reason, pause))
            reported = True

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self.path, limit=16 * 64 * 1024 + 1), 10
        )
        conn = _Connection(reader, writer)
        reading = asyncio.get_running_loop().create_task(self._read_handshake(conn))
        try:
            async with conn.lock:
                hello = await conn.send(conn.protocol.hello())
            reply = await asyncio.wait_for(asyncio.shield(hello), 10)
            if isinstance(reply, ErrorReply):
                raise DaemonError(reply.code, reply.message, reply.details)
            self.server = conn.protocol.server or {}
            async with conn.lock:
                subscribed = await conn.send(conn.protocol.request("subscribe"))
            reply = await asyncio.wait_for(asyncio.shield(subscribed), 10)
            if isinstance(reply, ErrorReply):
                raise DaemonError(reply.code, reply.message, reply.details)
        except BaseException:
            reading.cancel()
            conn.close()
            raise
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        return conn

    async def _read_handshake(self, conn: _Connection) -> None:
        reason = await self._read(conn)
        conn.fail_all(ConnectionResetError(errno.ECONNRESET, reason))

    async def _read(self, conn: _Connection) -> str:
        """Reads until the connection ends; returns why it ended."""
        while True:
            try:
                data = await conn.reader.read(65536)
            except OSError as exc:
                return exc.strerror or str(exc)
            if not data:
                return "the daemon closed the connection"
            try:
                messages = conn.protocol.receive_data(data)
            except ProtocolError as exc:
                return f"the daemon sent something unreadable: {exc.message}"
            for message in messages:
                if isinstance(message, Event):
                    if message.event == "events_dropped":
                        # Our subscription ended: subscribe again, and say so, so that
                        # listeners reload what they show.
                        asyncio.get_running_loop().create_task(self._resubscribe(conn))
                    self._emit(message)
                    continue
                future = conn.pending.pop(message.id, None)
                if future is not None and not future.done():
                    future.set_result(message)
                elif message.id is None and isinstance(message, ErrorReply):
                    return f"the daemon ended the connection: {message.message}"

    async def _resubscribe(self, conn: _Connection) -> None:
        with contextlib.suppress(OSError, DaemonError):
            async with conn.lock:
                await conn.send(conn.protocol.request("subscribe"))


def _describe(exc: BaseException, path: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no daemon socket at {path}"
    if isinstance(exc, ConnectionRefusedError):
        return f"the daemon at {path} refuses connections (not running?)"
    if isinstance(exc, PermissionError):
        return f"no permission to use {path} (are you in the kuloo-admin group?)"
    if isinstance(exc, DaemonError):
        return f"the daemon refused this client: {exc.message}"
    if isinstance(exc, ProtocolError):
        return f"the daemon speaks another protocol: {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"the daemon at {path} does not answer"
    return f"cannot reach the daemon at {path}: {exc}"
