"""A small HTTP/1.1 server for the simulator on asyncio, and a runner for a background thread.

Owns the wire: request parsing (Content-Length bodies, keep-alive, pipelining in order),
response framing, and the transport side of faults (waiting before a "slow" answer, closing
the connection for a "drop"). Hand-written rather than an ASGI server because it is several
times faster on two cores and because a fault must be able to drop a connection outright;
``Simulator`` is also a plain ASGI app for any other server.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from collections.abc import Callable
from http import HTTPStatus

from . import envelope as env
from .app import Simulator, response_headers
from .envelope import ApiError, Request, Response

_MAX_HEAD = 64 * 1024
_MAX_BODY = 8 * 1024 * 1024
_PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}


def _frame(resp: Response, keep_alive: bool) -> bytes:
    status = resp.status
    lines = [b"HTTP/1.1 %d %s" % (status, _PHRASES.get(status, b"Unknown"))]
    for k, x in response_headers(resp):
        lines.append(k + b": " + x)
    if status != 204 and status >= 200:
        lines.append(b"content-length: %d" % len(resp.body))
    lines.append(b"connection: keep-alive" if keep_alive else b"connection: close")
    body = resp.body if status != 204 else b""
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Protocol(asyncio.Protocol):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream's: a Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _bad(self, status: int) -> None:
        assert self.transport is not None
        resp = env.html_error(status)
        resp.request_id = env.new_request_id()
        self.transport.write(_frame(resp, False))
        self.transport.close()
        self.closed = True

    def _process(self) -> None:
        transport = self.transport
        assert transport is not None
        while not self.closed and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._bad(431)
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ")
            except ValueError:
                self._bad(400)
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    self._bad(400)
                    return
                headers[name.strip().lower()] = value.strip()
            if "transfer-encoding" in headers:
                self._bad(501)
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._bad(400)
                return
            if length > _MAX_BODY:
                self._bad(413)
                return
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            conn = headers.get("connection", "").lower()
            keep_alive = (version == "HTTP/1.1" and conn != "close") or conn == "keep-alive"
            path, _, query = target.partition("?")
            req = Request(method, path, query, headers, body, headers.get("host", "127.0.0.1"))
            try:
                resp = self.sim.handle(req)
            except Exception:  # a simulator bug must not kill the connection silently
                traceback.print_exc(file=sys.stderr)
                resp = env.render(
                    ApiError(500, "server_error", "Internal Server Error", "sellsim bug"),
                    env.new_request_id(),
                )
            if resp.delay or (resp.drop and resp.status == 0):
                if resp.drop and not resp.delay:
                    transport.abort()
                    self.closed = True
                    return
                self.busy = True
                transport.pause_reading()
                asyncio.get_running_loop().create_task(self._later(resp, keep_alive))
                return
            if not self._send(resp, keep_alive):
                return

    def _send(self, resp: Response, keep_alive: bool) -> bool:
        """Write (or drop) one response; False when the connection is now closed."""
        transport = self.transport
        assert transport is not None
        if resp.drop:
            transport.abort()
            self.closed = True
            return False
        transport.write(_frame(resp, keep_alive))
        if not keep_alive:
            transport.close()
            self.closed = True
            return False
        return True

    async def _later(self, resp: Response, keep_alive: bool) -> None:
        await asyncio.sleep(resp.delay)
        transport = self.transport
        if self.closed or transport is None:
            return
        if not self._send(resp, keep_alive):
            return
        self.busy = False
        transport.resume_reading()
        self._process()


async def _saver(sim: Simulator) -> None:
    while True:
        await asyncio.sleep(0.5)
        try:
            sim.save_if_dirty()
        except OSError:
            traceback.print_exc(file=sys.stderr)


async def serve(
    sim: Simulator,
    host: str,
    port: int,
    ready: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    """Serve until ``stop`` is set; call ``ready(base_url)`` once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(sim), host, port, backlog=256)
    real_port = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    saver = loop.create_task(_saver(sim))
    ready(f"http://{shown}:{real_port}")
    try:
        await stop.wait()
    finally:
        saver.cancel()
        server.close()
        sim.save_if_dirty()


class ServerThread:
    """Runs ``serve`` on its own event loop in a daemon thread (used by ``testing.SellSim``)."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sellsim", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(url: str) -> None:
                self.base_url = url
                self._ready.set()

            await serve(self.sim, self.host, self.port, ready, self._stop)

        try:
            asyncio.run(main())
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(10)
        if self._error or not self.base_url:
            raise RuntimeError(f"sellsim did not start: {self._error!r}")
        return self.base_url

    def stop(self) -> None:
        if self._loop and self._stop and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
