"""Our listener around hypercorn: a connection cap and a deadline for each whole request.

hypercorn bounds each read (``read_timeout``), not a request: a client sending a body one
byte every few seconds held a connection, and a descriptor, for as long as it liked.
This module is what hypercorn's trio worker would run, with our listener in its place:

- ``CappedListener`` accepts, then closes at once any connection past
  ``links.max_connections`` (one warning a minute says how many), so the links service
  never takes the descriptors the control socket and the store need (the daemon refuses
  to start with an open-file limit below ``max_connections + 512``: ``check_open_files``).
- ``DeadlineStream`` ends a connection whose request has not fully arrived
  ``links.request_seconds`` after its accept, or after the previous answer on a kept-alive
  connection: head and body together. Reads past the deadline raise ``trio.TooSlowError``,
  which hypercorn treats as the client going away.
- ``Deadlines``, an ASGI wrapper, tells the connection where its request stands: the
  deadline is lifted once the body is complete (or at once for a request without one) —
  a slow answer is never cut — and set again when the answer is sent.

``serve`` runs hypercorn's ``TCPServer`` per connection (its internals: the dependency is
pinned to one minor version in pyproject.toml).
"""

from __future__ import annotations

import math
import resource
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import structlog
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

log = structlog.get_logger("kuloo.links")

RESERVED_FILES = 512  # descriptors kept for the store, the control socket, logs, email
WARN_EVERY = 60.0


class EdgeConfig(HyperConfig):
    """hypercorn's configuration plus headers for every answer, its own errors included."""

    extra_headers: tuple[tuple[bytes, bytes], ...] = ()

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        return [*super().response_headers(protocol), *self.extra_headers]


def check_open_files(max_connections: int) -> None:
    """Refuse to start when the open-file limit cannot hold the cap and the rest of the daemon."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise RuntimeError(
            f"links.max_connections: the open-file limit is {soft}, below {needed} "
            f"(max_connections {max_connections} + {RESERVED_FILES}); raise LimitNOFILE "
            "(the unit sets 8192) or lower links.max_connections"
        )


class Connection:
    """One accepted connection's request deadline (monotonic trio time; inf = lifted)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = trio.current_time() + seconds
        self.scope: trio.CancelScope | None = None  # the read waiting now, if any

    def _set(self, deadline: float) -> None:
        self.deadline = deadline
        if self.scope is not None:
            self.scope.deadline = deadline

    def arm(self) -> None:
        """A new request may start: it has ``seconds`` to arrive."""
        self._set(trio.current_time() + self.seconds)

    def lift(self) -> None:
        """The request has fully arrived: the answer may take its time."""
        self._set(math.inf)


class DeadlineStream(trio.abc.HalfCloseableStream):
    """A ``SocketStream`` whose reads end at the connection's deadline."""

    def __init__(
        self, inner: trio.SocketStream, connection: Connection, on_close: Callable[[], None]
    ) -> None:
        self.inner = inner
        self.connection = connection
        self._on_close: Callable[[], None] | None = on_close

    @property
    def socket(self) -> trio.socket.SocketType:  # hypercorn reads the peer's address here
        return self.inner.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        with trio.CancelScope(deadline=self.connection.deadline) as scope:
            self.connection.scope = scope
            try:
                return await self.inner.receive_some(max_bytes)
            finally:
                self.connection.scope = None
        # The request did not arrive in time. Close now: hypercorn would otherwise keep the
        # socket until its keep-alive timer ends; its later sends see a closed stream.
        self.inner.socket.close()
        self._release()
        raise trio.TooSlowError

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    def _release(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self._release()


def _peer(sock: trio.socket.SocketType) -> tuple[str, int] | None:
    """The peer as hypercorn puts it in the ASGI scope's ``client``."""
    try:
        name = sock.getpeername()
    except OSError:
        return None
    return (name[0], name[1]) if sock.family in (socket.AF_INET, socket.AF_INET6) else None


class CappedListener(trio.abc.Listener[DeadlineStream]):
    """Accepts through ``trio.SocketListener``; past ``max_connections``, closes at once."""

    def __init__(self, sock: socket.socket, max_connections: int, request_seconds: float) -> None:
        self.inner = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self.max_connections = max_connections
        self.request_seconds = request_seconds
        self.connections: dict[tuple[str, int], Connection] = {}
        self.open = 0
        self.refused = 0
        self._warned_at = -math.inf

    def connection(self, client: object) -> Connection | None:
        """The connection of an ASGI scope's ``client``."""
        if not isinstance(client, list | tuple):
            return None
        return self.connections.get(tuple(client))

    async def accept(self) -> DeadlineStream:
        while True:
            stream = await self.inner.accept()
            peer = _peer(stream.socket)
            if self.open < self.max_connections and peer is not None:
                break
            await trio.aclose_forcefully(stream)
            if peer is not None:  # (None: the peer left before we looked)
                self._note_refused()
        self.open += 1
        connection = Connection(self.request_seconds)
        self.connections[peer] = connection

        def closed() -> None:
            self.open -= 1
            if self.connections.get(peer) is connection:
                del self.connections[peer]

        return DeadlineStream(stream, connection, closed)

    def _note_refused(self) -> None:
        self.refused += 1
        now = trio.current_time()
        if now - self._warned_at >= WARN_EVERY:
            log.warning(
                "links connections at the cap; new ones closed at once",
                max_connections=self.max_connections,
                closed=self.refused,
            )
            self._warned_at = now
            self.refused = 0

    async def aclose(self) -> None:
        await self.inner.aclose()


class Deadlines:
    """ASGI wrapper: lift the deadline once the request is in, set it again after the answer."""

    def __init__(self, app: Callable[..., Awaitable[None]], listener: CappedListener) -> None:
        self.app = app
        self.listener = listener

    async def __call__(self, scope, receive, send) -> None:
        connection = (
            self.listener.connection(scope.get("client")) if scope["type"] == "http" else None
        )
        if connection is None:
            await self.app(scope, receive, send)
            return
        has_body = any(
            k == b"transfer-encoding" or (k == b"content-length" and v.strip() not in (b"0", b""))
            for k, v in scope.get("headers", [])
        )
        if not has_body:
            connection.lift()

        async def receive_body():
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                connection.lift()
            return message

        async def send_answer(message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                connection.arm()

        try:
            await self.app(scope, receive_body, send_answer)
        finally:
            if connection.deadline == math.inf:
                connection.arm()


async def serve(
    app,
    config: HyperConfig,
    listener: CappedListener,
    stop: trio.Event,
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listener`` until ``stop``; then let the requests in flight finish
    within ``config.graceful_timeout`` (what hypercorn's trio ``worker_serve`` does)."""
    context = WorkerContext(None)
    handler = partial(
        TCPServer,
        wrap_app(Deadlines(app, listener), 0, "asgi"),
        config,
        context,
        ConnectionState({}),
    )
    try:
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(
                    partial(trio.serve_listeners, handler, [listener], handler_nursery=handlers)
                )
                task_status.started()
                await stop.wait()
                accepting.cancel_scope.cancel()
            await context.terminated.set()  # idle kept-alive connections close now
            handlers.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
