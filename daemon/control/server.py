"""Serves the control protocol on a local Unix socket, under trio.

The socket comes from socket activation or is bound here: bound to a temporary name,
``listen()``-ed, chmod 0660, then renamed into place, so no client can connect before
it listens. Every connection is served independently; a bad line or a failing method
gets an error reply and never takes down the connection, let alone the daemon.

Stopping: ``stop()`` closes the listeners and ends idle connections at once; a request
in progress finishes and gets its reply, then its connection closes.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import socket
from typing import Any

import structlog
import trio

from ..services import Services
from . import methods
from .protocol import (
    Event,
    LineSplitter,
    ProtocolError,
    Reply,
    Request,
    check_hello,
    encode,
    error_reply,
    parse_request,
)

log = structlog.get_logger("kuloo.control")
EVENT_BUFFER = 256


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


class Broadcaster:
    """Events to every subscribed connection; a slow one misses events, never blocks us."""

    def __init__(self) -> None:
        self._subscribers: dict[int, trio.MemorySendChannel] = {}

    def subscribe(self) -> trio.MemoryReceiveChannel:
        send, receive = trio.open_memory_channel[Event](EVENT_BUFFER)
        self._subscribers[id(receive)] = send
        return receive

    def unsubscribe(self, receive: trio.MemoryReceiveChannel) -> None:
        send = self._subscribers.pop(id(receive), None)
        if send is not None:
            send.close()

    def publish(self, event: str, data: Any) -> None:
        for key, send in list(self._subscribers.items()):
            try:
                send.send_nowait(Event(event, data))
            except trio.WouldBlock:
                log.warning("event dropped for a slow control client", event_name=event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.pop(key, None)


class ControlServer:
    def __init__(self, services: Services, broadcaster: Broadcaster, max_line_bytes: int) -> None:
        self.services = services
        self.broadcaster = broadcaster
        self.max_line_bytes = max_line_bytes
        self._listeners: list[trio.SocketListener] = []
        self._idle_scopes: set[trio.CancelScope] = set()
        self._stopping = False
        self._ids = itertools.count(1)
        self.connections = 0

    async def serve(self, sockets: list[socket.socket], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self._listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        async with trio.open_nursery() as nursery:
            for listener in self._listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        try:
            while not self._stopping:
                try:
                    stream = await listener.accept()
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
                except OSError as exc:  # EMFILE and friends: back off, keep serving
                    log.error("control socket accept failed", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._connection, stream)
        finally:
            listener.socket.close()

    def stop(self) -> None:
        """Stop accepting; end idle connections; let in-flight requests finish."""
        self._stopping = True
        for listener in self._listeners:
            listener.socket.close()  # wakes the accept loops
        for scope in list(self._idle_scopes):
            scope.cancel()

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = next(self._ids)
        self.connections += 1
        bound = log.bind(connection=conn)
        bound.debug("control client connected")
        send_lock = trio.Lock()
        state: dict[str, Any] = {"hello": False, "events": None}

        async def send(message) -> None:
            async with send_lock:
                await stream.send_all(encode(message))

        try:
            async with stream, trio.open_nursery() as nursery:
                splitter = LineSplitter(self.max_line_bytes)
                while not self._stopping:
                    with trio.CancelScope() as idle:
                        self._idle_scopes.add(idle)
                        try:
                            data = await stream.receive_some(65536)
                        finally:
                            self._idle_scopes.discard(idle)
                    if idle.cancelled_caught or not data:
                        break
                    for line in splitter.feed(data):
                        try:
                            reply = await self._answer(line, state, nursery, send)
                        except trio.Cancelled:
                            await self._say_cancelled(line, send)
                            raise
                        await send(reply)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-reply
        finally:
            if state["events"] is not None:
                self.broadcaster.unsubscribe(state["events"])
            self.connections -= 1
            bound.debug("control client disconnected")

    async def _answer(self, line, state, nursery, send):
        request_id = None
        try:
            request: Request = parse_request(line)
            request_id = request.id
            if request.method == "hello":
                check_hello(request.params, request.id)
                state["hello"] = True
                return Reply(request.id, {
                    "version": 1,
                    "server": "kuloo-daemon",
                    "server_version": methods.__version__,
                    "methods": sorted(["hello", "subscribe", *methods.available(self.services)]),
                })
            if not state["hello"]:
                raise ProtocolError("hello_required", "send hello with your protocol version first", request.id)
            if request.method == "subscribe":
                if state["events"] is None:
                    state["events"] = self.broadcaster.subscribe()
                    nursery.start_soon(self._pump_events, state["events"], send)
                return Reply(request.id, {"subscribed": True})
            result = await methods.dispatch(self.services, request.method, request.params, request.id)
            return Reply(request.id, result)
        except ProtocolError as exc:
            return error_reply(exc, request_id)
        except Exception:
            log.exception("control method failed", request_id=request_id)
            return error_reply(ProtocolError("internal", "the daemon failed to answer; see its log"), request_id)

    async def _say_cancelled(self, line, send) -> None:
        """The drain deadline cut a request short: tell the client rather than hang up mute."""
        try:
            request_id = parse_request(line).id
        except ProtocolError:
            request_id = None
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await send(error_reply(ProtocolError(
                    "unavailable", "the daemon is stopping; the request was cancelled — retry when it is back"
                ), request_id))

    async def _pump_events(self, receive: trio.MemoryReceiveChannel, send) -> None:
        async with receive:
            async for event in receive:
                await send(event)
