"""HTTP/1.1 under the Sell client: keep-alive connections on trio streams, parsed by httptools.

An ``httpx.AsyncBaseTransport``, so ``SellClient`` keeps speaking httpx's request and
response types (tests still hand it an ``httpx.MockTransport``); only the bytes on the wire
are handled here. Why not httpx's own transport: a sync sends one PUT per record (Sell has
no bulk update), and one PUT through ``SellClient`` cost about 0.7–0.9 ms of CPU on the
daemon's thread over httpcore and h11, against about 0.35 ms over this transport
(``bench/bench_sync.py`` prints both), which kept the sync above its 1 ms-per-record goal. The parsing — the part that is easy to get
wrong — stays with a maintained parser (httptools, llhttp's binding, as uvicorn uses).

What it does: ``http`` and ``https`` (certificates checked against certifi's store, as
httpx does), keep-alive per origin with at most ``max_connections`` open, idle connections
dropped after ``keepalive_expiry`` or when the server has closed them, Content-Length,
chunked and read-until-close bodies (Content-Encoding is decoded by ``httpx.Response``), and
httpx's exceptions for each failure so the client's retry rules apply unchanged:
``ConnectError``/``ConnectTimeout`` (nothing was sent), ``WriteError``, ``ReadError``,
``ReadTimeout``, ``RemoteProtocolError`` (a reply that is not HTTP, or cut short),
``LocalProtocolError`` (a header that would split the request). A connection is reused
only after a whole response was read from it; cancelled or failed exchanges close theirs.
No proxies, HTTP/2 or ``Expect: 100-continue``: the client needs none of them.
"""

from __future__ import annotations

import math
import select
import ssl
import time
from collections import deque

import httptools
import httpx
import trio

_NO_BODY_STATUS = frozenset({204, 304})


class _Parse:
    """httptools callbacks: collects one response's status, headers and body (1xx skipped).

    ``done`` once the whole answer is in: at its end, or after its head for a HEAD request.
    """

    __slots__ = ("head_only", "headers", "body", "headers_done", "done", "parser", "framed", "status", "keep_alive")

    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only
        self.on_message_begin()
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.done = False
        self.framed = False  # Content-Length or chunked: the end is known without EOF
        self.status = 0
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # read here: llhttp resets both once the message is complete
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self.framed = _framed(self.status, self.headers)
        if self.head_only and self.status >= 200:  # no body follows, whatever Content-Length says
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = self.status >= 200  # after a 1xx, the real answer follows


class _Connection:
    __slots__ = ("stream", "sock", "idle_since")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        self.idle_since = 0.0

    def closed_by_peer(self) -> bool:
        """True when the idle socket is readable: the server closed it (or sent what it should not)."""
        poller = select.poll()  # not select(): it refuses descriptors past 1023
        poller.register(self.sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))


class Wire(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int = 20,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.keepalive_expiry = keepalive_expiry
        self._slots = trio.Semaphore(max_connections)
        self._ssl_context = ssl_context
        self._idle: dict[tuple[bytes, bytes, int], deque[_Connection]] = {}
        self._closed = False

    # ---------------------------------------------------------------- connections

    def _take_idle(self, origin: tuple[bytes, bytes, int]) -> _Connection | None:
        pool = self._idle.get(origin)
        now = time.monotonic()
        while pool:
            conn = pool.pop()  # the most recently used: the least likely to have timed out
            if now - conn.idle_since < self.keepalive_expiry and not conn.closed_by_peer():
                return conn
            _close_now(conn)
        return None

    async def _connect(self, origin: tuple[bytes, bytes, int], within: float | None) -> _Connection:
        scheme, host, port = origin
        hostname = host.decode()
        with trio.move_on_after(within if within is not None else math.inf):
            try:
                tcp = await trio.open_tcp_stream(hostname, port)
            except OSError as exc:
                raise httpx.ConnectError(f"cannot connect to {hostname}:{port}: {exc}") from exc
            stream: trio.abc.Stream = tcp
            if scheme == b"https":
                if self._ssl_context is None:
                    self._ssl_context = httpx.create_ssl_context()
                stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=hostname,
                                        https_compatible=True)  # fmt: skip
                try:
                    await stream.do_handshake()
                except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                    tcp.socket.close()
                    # trio wraps ssl's own error, which says what was wrong with the certificate
                    raise httpx.ConnectError(f"TLS with {hostname}:{port} failed: {exc.__cause__ or exc}") from exc
                except BaseException:  # cancelled (the connect timeout or the caller's)
                    tcp.socket.close()
                    raise
            return _Connection(stream, tcp.socket)
        raise httpx.ConnectTimeout(f"no connection to {hostname}:{port} within {within:g} s")

    # ---------------------------------------------------------------- one exchange

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        origin = _origin(request.url)
        timeouts = request.extensions.get("timeout", {})
        head = _head(request)
        body = await request.aread()

        async with self._slots:
            conn = self._take_idle(origin)
            if conn is None:
                conn = await self._connect(origin, timeouts.get("connect"))
            try:
                parse = await self._exchange(conn, head + body, timeouts.get("read"),
                                             request.method == "HEAD")  # fmt: skip
            except BaseException:
                _close_now(conn)
                raise
            if parse.keep_alive and not self._closed and parse.framed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(origin, deque()).append(conn)
            else:
                _close_now(conn)
        return httpx.Response(
            parse.status,
            headers=parse.headers,
            stream=httpx.ByteStream(b"".join(parse.body)),
        )

    async def _exchange(
        self, conn: _Connection, data: bytes, within: float | None, head_only: bool
    ) -> _Parse:
        """Send one request and read its whole answer, all within ``within`` seconds."""
        parse = _Parse(head_only)
        with trio.move_on_after(within if within is not None else math.inf):
            try:
                await conn.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise httpx.WriteError(f"sending the request failed: {exc}") from exc
            while True:
                try:
                    chunk = await conn.stream.receive_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise httpx.ReadError(f"reading the response failed: {exc}") from exc
                if not chunk:
                    return _at_eof(parse)
                try:
                    parse.parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    raise httpx.RemoteProtocolError("the server switched protocols") from None
                except httptools.HttpParserError as exc:
                    raise httpx.RemoteProtocolError(f"the server's reply is not HTTP/1.1: {exc}") from None
                if parse.done:
                    return parse
        raise httpx.ReadTimeout(f"no complete answer within {within:g} s")

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for pool in idle.values():
            for conn in pool:
                _close_now(conn)


def _origin(url: httpx.URL) -> tuple[bytes, bytes, int]:
    """(scheme, host, port) of ``url``, the port defaulted by the scheme; http and https only."""
    scheme = url.raw_scheme
    if scheme not in (b"http", b"https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
    return scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80)


def _head(request: httpx.Request) -> bytes:
    """Request line and headers, with a CR, LF or NUL in any of them refused (header splitting)."""
    lines = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    breaks = len(request.headers.raw) + 2  # one CRLF per line, and the blank line
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\0" in head:
        raise httpx.LocalProtocolError("a request header holds a line break or NUL")
    return head


def _framed(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response's end is known without the connection closing (a HEAD's answer
    without Content-Length is not: llhttp, which does not know the method, calls it not
    keep-alive, so that connection is closed anyway)."""
    if status in _NO_BODY_STATUS:
        return True
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
            return True
    return False


def _at_eof(parse: _Parse) -> _Parse:
    """The server closed the connection: a complete read-until-close body, or a cut-short reply."""
    if not parse.headers_done:
        raise httpx.RemoteProtocolError("the server closed the connection without a complete response")
    if parse.framed and not parse.done:
        raise httpx.RemoteProtocolError("the server closed the connection in the middle of the response body")
    return parse


def _close_now(conn: _Connection) -> None:
    """Close without a TLS goodbye or any wait (a failed or cancelled exchange, a stale connection)."""
    try:
        conn.sock.close()
    except OSError:
        pass
