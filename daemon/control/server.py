"""Serves the control protocol on a local Unix socket, under trio.

The socket comes from socket activation or is bound here: bound to a temporary name,
``listen()``-ed, chmod 0660, then renamed into place, so no client can connect before
it listens.

One ``Connection`` object per client (the model is hypercorn's trio ``TCPServer`` over
its sans-IO protocol) holds the stream, the send lock, the send timeout, the sans-IO
``ServerProtocol`` and the event subscription. What can go wrong stays inside it:

- a bad line gets an error reply (from the protocol); a method that fails unexpectedly
  gets an ``internal`` reply with the request's id and is logged; the connection goes on;
- a client that goes away (at any point: mid-request, mid-reply, with events queued)
  ends its connection quietly — trio reports that inside ``ExceptionGroup``s, hence
  ``except*``;
- a client that stops reading for ``send_timeout`` seconds is disconnected, and so is
  one that has not said hello ``hello_timeout`` seconds after connecting;
- anything else unexpected ends that connection only, with one log line and an
  ``internal`` error when one can still be sent. Nothing reaches the daemon's nursery.

Events: ``Broadcaster.publish`` never blocks; a subscriber whose queue is full loses its
subscription, gets one ``events_dropped`` event, and may subscribe again.

Stopping: ``stop()`` closes the listeners and ends idle connections at once; a request
in progress finishes and gets its reply, then its connection closes.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import itertools
import os
import socket
from typing import Any

import structlog
import trio

from .. import __version__
from ..delivery.service import Delivery
from ..services import Services
from . import methods
from .context import Context
from .protocol import (
    ErrorReply,
    Event,
    ProtocolError,
    Reply,
    Request,
    ServerProtocol,
    encode,
    error_reply,
)

log = structlog.get_logger("kuloo.control")
EVENT_BUFFER = 256
SEND_TIMEOUT = 60.0  # seconds a client may leave a reply or event unread before it is dropped
HELLO_TIMEOUT = 10.0  # seconds from connecting to a successful hello; idle later is fine (the TUI)
RECEIVE_BYTES = 65536
# accept() errors that mean "out of capacity for now" (as trio's serve_listeners): back off.
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
INTERNAL = "the daemon failed to answer; see its log"


def bind_unix(path: str, group: str = "") -> socket.socket:
    """A listening Unix socket at ``path`` (mode 0660), refusing to steal a live one."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale, left by a crash
        else:
            raise RuntimeError(f"{path}: another daemon is already listening there")
        finally:
            probe.close()
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise RuntimeError(f"control.group: there is no group named {group!r}") from None
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(tmp):
            os.unlink(tmp)
        sock.bind(tmp)
        sock.listen(64)
        os.chmod(tmp, 0o660)
        if gid != -1:
            os.chown(tmp, -1, gid)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sock


class Subscription:
    """One connection's queue of events. The broadcaster ends it when it overflows."""

    def __init__(self, size: int, owner: int) -> None:
        self.send, self.receive = trio.open_memory_channel[Event](size)
        self.owner = owner
        self.overflowed = False
        self.dropped = 0


class Broadcaster:
    """Events to every subscribed connection; a slow one loses its subscription, never blocks us."""

    def __init__(self, buffer: int = EVENT_BUFFER) -> None:
        self.buffer = buffer
        self._subscriptions: set[Subscription] = set()
        self.dropped = 0  # events a subscriber was too slow for (the metrics count them)

    def subscribe(self, owner: int = 0) -> Subscription:
        subscription = Subscription(self.buffer, owner)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        subscription.send.close()

    def publish(self, event: str, data: Any) -> None:
        message = Event(event, data)
        for subscription in list(self._subscriptions):
            try:
                subscription.send.send_nowait(message)
            except trio.WouldBlock:
                subscription.overflowed = True
                subscription.dropped += 1
                self.dropped += 1
                self.unsubscribe(subscription)
                log.warning(
                    "control client too slow for its events; subscription ended",
                    connection=subscription.owner,
                    queued=self.buffer,
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscriptions.discard(subscription)


class ClientGone(Exception):
    """The client hung up, or stopped reading: its connection ends quietly."""


class Connection:
    """One control client: its stream, send lock, send timeout, protocol state and subscription."""

    def __init__(self, server: ControlServer, stream: trio.SocketStream, number: int) -> None:
        self.server = server
        self.stream = stream
        self.number = number
        self.protocol = ServerProtocol(
            ["subscribe", *methods.available(server.services)], __version__, server.max_line_bytes
        )
        self.send_lock = trio.Lock()
        self.subscription: Subscription | None = None
        self.log = log.bind(connection=number)
        self._nursery: trio.Nursery | None = None
        self._hello_deadline = trio.current_time() + server.hello_timeout

    async def run(self) -> None:
        self.log.debug("control client connected")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._serve()
                nursery.cancel_scope.cancel()
        except* (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except* Exception as failure:
            self.log.error("control connection failed; closing it", exc_info=failure)
            await self._last_words()
        finally:
            if self.subscription is not None:
                self.server.broadcaster.unsubscribe(self.subscription)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self.log.debug("control client disconnected")

    async def _serve(self) -> None:
        while not self.server.stopping:
            data = await self._receive()
            if not data:
                return
            for action in self.protocol.receive_data(data):
                await self.send(
                    await self._answer(action) if isinstance(action, Request) else encode(action)
                )

    async def _receive(self) -> bytes:
        """The client's next bytes; b"" once it hangs up, is late with its hello, or when the
        server stops while we wait."""
        with trio.CancelScope() as idle:
            if not self.protocol.greeted:
                idle.deadline = self._hello_deadline
            self.server.idle.add(idle)
            try:
                return await self.stream.receive_some(RECEIVE_BYTES)
            finally:
                self.server.idle.discard(idle)
        if not self.protocol.greeted and not self.server.stopping:
            self.log.info(
                "control client sent no hello in time; closing", seconds=self.server.hello_timeout
            )
        return b""

    async def send(self, data: bytes) -> None:
        async with self.send_lock:
            with trio.move_on_after(self.server.send_timeout) as waited:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise ClientGone from None
        if waited.cancelled_caught:
            self.log.warning(
                "control client does not read; closing the connection",
                seconds=self.server.send_timeout,
            )
            raise ClientGone

    async def _answer(self, request: Request) -> bytes:
        """The encoded reply to one request; an unexpected failure becomes ``internal``."""
        try:
            if request.method == "subscribe":
                return encode(Reply(request.id, self._subscribe()))
            result = await methods.dispatch(
                self.server.context, request.method, request.params, request.id
            )
            return encode(Reply(request.id, result))
        except ProtocolError as exc:
            return encode(error_reply(exc, request.id))
        except trio.Cancelled:
            await self._say_cancelled(request.id)
            raise
        except Exception:
            self.log.exception(
                "control method failed", method=request.method, request_id=request.id
            )
            return encode(ErrorReply(request.id, "internal", INTERNAL))

    def _subscribe(self) -> dict[str, Any]:
        if self.subscription is None or self.subscription.overflowed:
            self.subscription = self.server.broadcaster.subscribe(self.number)
            assert self._nursery is not None
            self._nursery.start_soon(self._pump, self.subscription)
        return {"subscribed": True}

    async def _pump(self, subscription: Subscription) -> None:
        """Sends the subscription's events. It never raises into the connection's nursery: that
        would cancel a request in flight, and a store unit of work must not be cut short
        because a client left. The client gone, too slow, or a failure here: the stream is
        closed, and the request loop ends once its request (if any) is done."""
        try:
            async with subscription.receive:
                async for event in subscription.receive:
                    if subscription.overflowed:
                        subscription.dropped += 1  # stale now: the client must re-read anyway
                        continue
                    await self.send(encode(event))
            if subscription.overflowed:
                if self.subscription is subscription:
                    self.subscription = None
                await self.send(encode(Event("events_dropped", {"dropped": subscription.dropped})))
        except ClientGone:
            await self.stream.aclose()
        except Exception:
            self.log.exception("control connection failed; closing it")
            await self._last_words()
            await self.stream.aclose()

    async def _say_cancelled(self, request_id: Any) -> None:
        """The drain deadline cut a request short: tell the client rather than hang up mute."""
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            with contextlib.suppress(ClientGone):
                await self.send(
                    encode(
                        ErrorReply(
                            request_id,
                            "unavailable",
                            "the daemon is stopping; the request was cancelled — retry when it is back",
                        )
                    )
                )

    async def _last_words(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            with contextlib.suppress(ClientGone):
                await self.send(encode(ErrorReply(None, "internal", INTERNAL)))


class ControlServer:
    def __init__(
        self,
        services: Services,
        delivery: Delivery,
        broadcaster: Broadcaster,
        max_line_bytes: int,
        *,
        links_url: str = "",
        send_timeout: float = SEND_TIMEOUT,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.services = services
        # What the methods stand on, this server's connection count included.
        self.context = Context(services, delivery, links_url, lambda: self.connections)
        self.broadcaster = broadcaster
        self.max_line_bytes = max_line_bytes
        self.send_timeout = send_timeout
        self.hello_timeout = hello_timeout
        self.stopping = False
        self.idle: set[trio.CancelScope] = set()  # connections waiting for their client's next line
        self._listeners: list[trio.SocketListener] = []
        self._open: set[Connection] = set()
        self._ids = itertools.count(1)

    @property
    def connections(self) -> int:
        """Open control connections."""
        return len(self._open)

    async def serve(
        self, sockets: list[socket.socket], *, task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        self._listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        async with trio.open_nursery() as nursery:
            for listener in self._listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        try:
            while not self.stopping:
                try:
                    stream = await listener.accept()
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    log.error("control socket accept failed; backing off", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(
                    self._serve_connection, Connection(self, stream, next(self._ids))
                )
        finally:
            listener.socket.close()

    async def _serve_connection(self, connection: Connection) -> None:
        self._open.add(connection)
        try:
            await connection.run()
        finally:
            self._open.discard(connection)

    def stop(self) -> None:
        """Stop accepting; end idle connections; let in-flight requests finish."""
        self.stopping = True
        for listener in self._listeners:
            listener.socket.close()  # wakes the accept loops
        for scope in list(self.idle):
            scope.cancel()
