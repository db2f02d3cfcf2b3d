"""SellClient over httpx's own transport against scripted servers on loopback.

Each test runs a real trio TCP (or TLS) server whose handler writes exactly the bytes a
server could send, so framing, keep-alive, failures, TLS, proxies and the limits on a
response (``crm/body.py``) are seen on a real socket, through the client's retry rules.
"""

from __future__ import annotations

import functools
import gzip
import os
import resource
import ssl
import struct
import tracemalloc
import zlib
from contextlib import contextmanager
from functools import partial

import httpx
import pytest
import trio
import trustme

from kuloo_daemon.crm import errors as E
from kuloo_daemon.crm.body import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    CappedBody,
    check_head,
    coding_of,
)
from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.secrets import Secret

TOKEN = "z9" * 32
LEAD = b'{"data":{"id":1,"last_name":"L1","updated_at":"2026-01-01T00:00:00Z"}}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(LEAD),
    LEAD,
)
MiB = 1024 * 1024


class Server:
    """A loopback server running ``handler(stream, server)`` per connection; counts them."""

    def __init__(self, handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.sent = 0  # body bytes the hostile handlers wrote
        self.closed = trio.Event()
        self.port = 0

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self._conn, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://localhost:{self.port}"

    async def _conn(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        if self.ssl_context is not None:
            stream = trio.SSLStream(stream, self.ssl_context, server_side=True)
        try:
            await self.handler(stream, self)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.open -= 1
            await trio.aclose_forcefully(stream)
            self.closed.set()

    async def read_request(self, stream: trio.abc.Stream, buf: bytearray) -> bytes | None:
        """One whole request (head, and a Content-Length body) from ``buf`` and the stream."""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return None
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        length = 0
        for line in bytes(buf[:end]).split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(buf) < end + length:
            buf += await stream.receive_some(65536)
        request = bytes(buf[: end + length])
        del buf[: end + length]
        self.requests.append(request)
        return request


def replying(*answers: bytes, close_after: bool = False):
    """A handler answering each request on a connection with the next of ``answers`` (cycling)."""

    async def handler(stream, server: Server) -> None:
        buf = bytearray()
        n = 0
        while await server.read_request(stream, buf) is not None:
            await stream.send_all(answers[n % len(answers)])
            n += 1
            if close_after:
                return

    return handler


def streaming(head: bytes, chunk: bytes, total: float = float("inf")):
    """A handler answering every request with ``head``, then ``chunk`` again and again (up
    to ``total`` bytes) for as long as the client reads."""

    async def handler(stream, server: Server) -> None:
        buf = bytearray()
        while await server.read_request(stream, buf) is not None:
            await stream.send_all(head)
            sent = 0
            while sent < total:
                await stream.send_all(chunk)
                sent += len(chunk)
                server.sent += len(chunk)

    return handler


def sell_at(url: str, **kw) -> SellClient:
    kw.setdefault("budget", RateBudget(1000.0))
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_cap", 0.001)
    return SellClient(url, Secret(TOKEN), **kw)


def answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@contextmanager
def peak_memory():
    """Yields a list that receives the peak of Python allocations inside the block."""
    box: list[int] = []
    tracemalloc.start()
    try:
        yield box
    finally:
        box.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@functools.cache
def gzip_bomb() -> bytes:
    """About 1 MB of valid gzip that expands to 1 GiB of zeros."""
    zeros = bytes(16 * MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, repeatable
    crc = 0
    for _ in range(64):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (64 * len(zeros)) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + block * 64 + deflate.flush() + trailer


# ---------------------------------------------------------------------- framing, keep-alive


async def test_requests_share_one_connection_and_are_framed_exactly(nursery):
    server = Server(replying(OK))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        for n in range(3):
            await sell.request("PUT", f"/v2/leads/{n}", params={"a": 1, "b": "x y"}, json={"x": 1})
    assert server.connections == 1
    head, body = server.requests[2].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /v2/leads/2?a=1&b=x+y HTTP/1.1"
    assert f"Host: localhost:{server.port}".encode() in lines
    assert b"Content-Length: 7" in lines and f"Authorization: Bearer {TOKEN}".encode() in lines
    assert b"Accept-Encoding: gzip, deflate" in lines
    assert body == b'{"x":1}'


async def test_chunked_body_is_decoded_and_the_connection_kept(nursery):
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'9\r\n{"data":{\r\n3\r\n}}\n\r\n0\r\n\r\n'
    )
    server = Server(replying(chunked))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert await sell.get("/v2/x") == {}
        assert await sell.get("/v2/x") == {}
    assert server.connections == 1


async def test_a_body_read_until_close_is_whole_and_its_connection_not_reused(nursery):
    doc = b'{"data":{"pad":"' + b"x" * 200_000 + b'"}}'
    server = Server(replying(b"HTTP/1.1 200 OK\r\n\r\n" + doc, close_after=True))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert (await sell.get("/v2/x"))["pad"] == "x" * 200_000
        assert (await sell.get("/v2/x"))["pad"] == "x" * 200_000
    assert server.connections == 2


async def test_a_large_body_across_many_reads(nursery):
    doc = b'{"data":{"pad":"' + b"y" * 1_000_000 + b'"}}'
    server = Server(replying(answer(doc)))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert (await sell.get("/v2/x"))["pad"] == "y" * 1_000_000
        assert (await sell.get("/v2/x"))["pad"] == "y" * 1_000_000
    assert server.connections == 1


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "raw-deflate", "GZIP"])
async def test_one_content_coding_is_decoded(nursery, coding):
    """Planted bugs: a coding dropped from the table; deflate without zlib's wrapper (as
    some servers send it) refused; the coding's name compared case-sensitively."""
    if coding == "deflate":
        packed = zlib.compress(LEAD)
    elif coding == "raw-deflate":
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        packed, coding = packer.compress(LEAD) + packer.flush(), "deflate"
    else:
        packed = gzip.compress(LEAD)
    server = Server(
        replying(
            answer(
                packed,
                b"Content-Encoding: " + coding.encode(),
                b"X-Request-Id: r-1",
                b"Date: Mon, 07 Dec 2026",
            )
        )
    )
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        lead = await sell.get_lead(1)
        response = await sell.request("GET", "/v2/leads/1")
    assert lead.id == 1 and lead.last_name == "L1"
    assert response.content == LEAD and "content-encoding" not in response.headers
    # the other headers stay, the length is the decoded body's, the request is known
    assert response.headers["x-request-id"] == "r-1" and sell.last_date == "Mon, 07 Dec 2026"
    assert response.headers["content-length"] == str(len(LEAD))
    assert response.request.url.path == "/v2/leads/1"


async def test_connection_close_opens_a_new_connection(nursery):
    server = Server(replying(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert await sell.sync_start("dev") is None
        assert await sell.sync_start("dev") is None
    assert server.connections == 2


async def test_a_204_carries_no_body_and_keeps_the_connection(nursery):
    server = Server(replying(b"HTTP/1.1 204 No Content\r\n\r\n", OK))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert await sell.sync_start("dev") is None
        assert (await sell.get_lead(1)).id == 1
    assert server.connections == 1


async def test_an_informational_answer_is_skipped(nursery):
    async def hint_then_answer(stream, server):
        await server.read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await trio.sleep(0.05)  # so the client reads the hint on its own
        await stream.send_all(OK)

    server = Server(hint_then_answer)
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        response = await sell.request("GET", "/v2/leads/1")
    assert response.status_code == 200 and response.content == LEAD
    assert "link" not in response.headers


async def test_an_idle_connection_the_server_closed_is_not_used(nursery):
    server = Server(replying(OK, close_after=True))  # closes without saying so
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=1) as sell:
        await sell.get_lead(1)
        await server.closed.wait()
        await sell.request("POST", "/v2/leads", json={"data": {}})  # not retried: must not fail
    assert server.connections == 2


async def test_at_most_twenty_connections_are_open(nursery):
    twenty_in = trio.Event()

    async def slow(stream, server):
        buf = bytearray()
        while await server.read_request(stream, buf) is not None:
            if len(server.requests) >= 20:
                twenty_in.set()
            with trio.move_on_after(5):  # hold every answer until twenty are waiting
                await twenty_in.wait()
            await trio.sleep(0.05)  # a 21st connection would be open by now
            await stream.send_all(OK)

    server = Server(slow)
    await server.serve(nursery)
    async with sell_at(server.url, timeout=30) as sell, trio.open_nursery() as inner:
        for _ in range(30):
            inner.start_soon(sell.get_lead, 1)
    assert server.most_open == 20 and len(server.requests) == 30


async def test_aclose_closes_idle_connections(nursery):
    server = Server(replying(OK))
    await server.serve(nursery)
    sell = sell_at(server.url)
    async with sell:
        await sell.get_lead(1)
    await server.closed.wait()  # the server read EOF
    with pytest.raises(RuntimeError, match="^SellClient is not open"):
        await sell.get_lead(1)


# ---------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "answer_bytes",
    [
        b"",
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut',
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"hello there\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=[
        "no-answer",
        "cut-body",
        "cut-head",
        "not-http",
        "two-lengths",
        "length-and-chunked",
        "upgrade",
    ],
)
async def test_a_broken_answer_is_retried_for_a_read_and_maybe_applied_for_a_create(
    nursery, answer_bytes
):
    server = Server(replying(answer_bytes, close_after=True))
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=3) as sell:
        with pytest.raises(E.NetworkError) as got:
            await sell.get_lead(1)
        assert got.value.attempts == 3 and not got.value.maybe_applied
        assert TOKEN not in str(got.value)
        with pytest.raises(E.NetworkError) as got:
            await sell.create_lead({"last_name": "X"})
        assert got.value.maybe_applied and got.value.attempts == 1
    assert len(server.requests) == 4


async def test_a_trickling_answer_is_bounded_by_the_timeout(nursery):
    """Whole attempt, body included: a server sending a byte every 50 ms never finishes."""

    async def trickle(stream, server):
        await server.read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            await trio.sleep(0.05)
            await stream.send_all(b"x")
            server.sent += 1

    server = Server(trickle)
    await server.serve(nursery)
    start = trio.current_time()
    async with sell_at(server.url, timeout=0.5, max_attempts=2) as sell:
        with pytest.raises(E.NetworkError, match="no answer within 0.5 s") as got:
            await sell.get_lead(1)
    assert got.value.attempts == 2 and trio.current_time() - start < 3
    assert 0 < server.sent < 100


async def test_a_cancelled_exchange_is_never_reused(nursery):
    answered = []

    async def late_then_ok(stream, server):
        buf = bytearray()
        while await server.read_request(stream, buf) is not None:
            if not answered:
                answered.append(1)
                await trio.sleep(0.3)  # the client has given up by now
                await stream.send_all(answer(b'{"data":{"id":99,"last_name":"Late"}}'))
                continue
            await stream.send_all(OK)

    server = Server(late_then_ok)
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        with trio.move_on_after(0.05):
            await sell.get_lead(99)
        # the late answer must not be taken for the next request's
        assert (await sell.get_lead(1)).id == 1
    assert server.connections == 2


async def test_a_header_with_a_line_break_is_refused_before_sending(nursery):
    server = Server(replying(OK))
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=2) as sell:
        for value in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b"):
            with pytest.raises(E.NetworkError, match="LocalProtocolError"):
                await sell.request("GET", "/v2/leads", headers={"X-Note": value})
    assert server.requests == []


async def test_a_reset_connection_is_a_network_error(nursery):
    async def reset(stream, server):
        await server.read_request(stream, bytearray())
        linger = struct.pack("ii", 1, 0)  # linger 0: the client gets a RST, not a FIN
        stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, linger)
        stream.socket.close()

    server = Server(reset)
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=2) as sell:
        with pytest.raises(E.NetworkError, match="could not reach Sell: ReadError") as got:
            await sell.get_lead(1)
    assert got.value.attempts == 2 and len(server.requests) == 2


async def test_a_connection_not_accepted_in_time_is_a_connect_timeout():
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        fillers = []
        for _ in range(3):  # fill the backlog: the kernel then drops further SYNs
            filler = trio.socket.socket()
            with trio.move_on_after(0.2):
                await filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        async with sell_at(f"http://127.0.0.1:{port}", timeout=0.3, max_attempts=1) as sell:
            with pytest.raises(E.NetworkError, match="ConnectTimeout") as got:
                await sell.create_lead({"last_name": "X"})
        assert not got.value.maybe_applied  # nothing was sent
        for filler in fillers:
            filler.close()


async def test_connections_past_descriptor_1023_are_reused(nursery):
    """select() cannot watch such descriptors; a check built on it would drop every connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"the descriptor limit {hard} is below 1100")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        server = Server(replying(OK))
        await server.serve(nursery)
        async with sell_at(server.url) as sell:
            for _ in range(3):
                await sell.get_lead(1)
        assert server.connections == 1
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------- the environment


async def test_http_proxy_from_the_environment_is_used(nursery, monkeypatch):
    """trust_env: operators behind an egress proxy set HTTP(S)_PROXY. Planted bug:
    ``trust_env=False`` (the request goes to sell.invalid, which does not resolve)."""
    proxy = Server(replying(OK))
    await proxy.serve(nursery)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with sell_at("http://sell.invalid", max_attempts=1) as sell:
        assert (await sell.get_lead(1)).id == 1
    assert proxy.requests[0].startswith(b"GET http://sell.invalid/v2/leads/1 HTTP/1.1\r\n")


async def test_https_goes_through_the_proxy_in_a_tunnel_without_the_token(nursery, monkeypatch):
    """HTTPS_PROXY: the proxy is asked for a CONNECT tunnel and never sees the token."""
    proxy = Server(replying(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
    await proxy.serve(nursery)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with sell_at("https://sell.invalid", max_attempts=1) as sell:
        with pytest.raises(E.NetworkError, match="ProxyError"):
            await sell.get_lead(1)
    assert proxy.requests[0].startswith(b"CONNECT sell.invalid:443 HTTP/1.1\r\n")
    assert TOKEN.encode() not in b"".join(proxy.requests)


# ---------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def trusted(ca, tmp_path, monkeypatch):
    """The test CA as the one the client trusts (``SSL_CERT_FILE``, read through trust_env)."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def tls_server(ca: trustme.CA, handler=None, name: str = "localhost") -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return Server(handler or replying(OK), ssl_context=context)


async def test_https_with_a_trusted_certificate(nursery, ca, trusted):
    server = tls_server(ca)
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert (await sell.get_lead(1)).id == 1
        assert (await sell.get_lead(1)).id == 1
    assert server.connections == 1


async def test_https_refuses_an_untrusted_certificate(nursery, ca):
    server = tls_server(ca)
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=1) as sell:  # certifi's store lacks the test CA
        with pytest.raises(E.NetworkError, match="ConnectError: .*certificate") as got:
            await sell.create_lead({"last_name": "X"})
    assert not got.value.maybe_applied and server.requests == []


async def test_https_refuses_a_certificate_for_another_host(nursery, ca, trusted):
    server = tls_server(ca, name="sell.example")
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=1) as sell:
        with pytest.raises(E.NetworkError, match="match|mismatch"):
            await sell.get_lead(1)
    assert server.requests == []


async def test_https_body_read_until_close_without_a_tls_goodbye(nursery, ca, trusted):
    """Servers often end a read-until-close body by closing TCP without TLS's close_notify
    (browsers and httpx accept it): the body is whole."""
    server = tls_server(ca, replying(b"HTTP/1.1 200 OK\r\n\r\n" + LEAD, close_after=True))
    await server.serve(nursery)
    async with sell_at(server.url) as sell:
        assert (await sell.get_lead(1)).last_name == "L1"


# ---------------------------------------------------------------------- hostile answers


async def _refused(server: Server, nursery, *, attempts: int = 2, **kw) -> E.NetworkError:
    """Serve ``server`` and GET through a client with ``attempts``: the NetworkError it
    raised, after checking it was retried like a 5xx and memory stayed bounded."""
    await server.serve(nursery)
    with peak_memory() as peak:
        async with sell_at(server.url, max_attempts=attempts, timeout=60, **kw) as sell:
            with pytest.raises(E.NetworkError) as got:
                await sell.get_lead(1)
    assert got.value.attempts == attempts and len(server.requests) == attempts
    assert str(got.value).startswith("no usable answer from Sell: RemoteProtocolError: ")
    assert peak[0] < 50 * MiB, f"peak {peak[0] / MiB:.1f} MiB"
    return got.value


async def test_a_1_gb_body_stops_at_the_cap(nursery):
    """Planted bugs: the raw size not counted (the whole gigabyte read); the cap compared
    with >= (see the boundary test); the body read with aread (memory)."""
    server = Server(
        streaming(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n",
            b"x" * 65536,
            total=1_000_000_000,
        )
    )
    err = await _refused(server, nursery)
    assert "a body larger than 16777216 bytes" in str(err)
    assert server.sent < 2 * 40 * MiB  # stopped early, on each attempt


async def test_an_endless_chunked_body_stops_at_the_cap(nursery):
    chunk = b"10000\r\n" + b"y" * 65536 + b"\r\n"
    server = Server(streaming(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunk))
    err = await _refused(server, nursery)
    assert "a body larger than 16777216 bytes" in str(err)
    assert server.sent < 2 * 40 * MiB


async def test_a_1_mb_gzip_bomb_stops_at_the_cap(nursery):
    """Planted bugs: decompress without max_length (1 GiB in memory: the peak check fails);
    only the raw size counted (1 MB passes)."""
    bomb = gzip_bomb()
    assert len(bomb) < 1.1 * MiB
    server = Server(replying(answer(bomb, b"Content-Encoding: gzip")))
    err = await _refused(server, nursery)
    assert "a body larger than 16777216 bytes once decoded" in str(err)


async def test_a_gzip_bomb_through_a_small_cap(nursery):
    server = Server(replying(answer(gzip_bomb()[:200_000], b"Content-Encoding: gzip")))
    err = await _refused(server, nursery, max_response_bytes=MiB)
    assert "a body larger than 1048576 bytes once decoded" in str(err)


async def test_an_endless_compressed_body_that_decodes_to_nothing_stops_at_the_cap(nursery):
    """Empty deflate blocks, forever: the decoded size stays 0, so the raw size is what
    stops it. Planted bug: only the decoded size counted."""
    empty_blocks = b"\x00\x00\x00\xff\xff" * 13_000  # stored blocks of no bytes
    chunk = b"%x\r\n%s\r\n" % (len(empty_blocks), empty_blocks)
    gzip_head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    head = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(gzip_head), gzip_head)
    )
    server = Server(streaming(head, chunk))
    err = await _refused(server, nursery, max_response_bytes=MiB)
    assert f"a body larger than {MiB} bytes" in str(err) and "decoded" not in str(err)
    assert server.sent < 2 * 20 * MiB


async def test_100000_headers_are_refused(nursery):
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % n for n in range(100_000))
    server = Server(replying(head + b"Content-Length: 2\r\n\r\n{}"))
    await _refused(server, nursery)


@pytest.mark.parametrize(
    "codings",
    [
        [b"Content-Encoding: gzip, gzip"],
        [b"Content-Encoding: gzip", b"Content-Encoding: gzip"],
        [b"Content-Encoding: deflate, gzip"],
    ],
    ids=["one-header", "two-headers", "deflate-gzip"],
)
async def test_stacked_content_codings_are_refused(nursery, codings):
    """Planted bug: stacked codings accepted (httpx would decode every layer, unbounded)."""
    twice = gzip.compress(gzip.compress(LEAD))
    server = Server(replying(answer(twice, *codings)))
    err = await _refused(server, nursery)
    assert "stacked content codings" in str(err)


@pytest.mark.parametrize(
    ("body", "coding", "says"),
    [
        (b"\x28\xb5\x2f\xfd", b"zstd", "content coding 'zstd', which the client does not accept"),
        (b"\x0b\x01\x80", b"br", "content coding 'br', which the client does not accept"),
        (b"not gzip at all", b"gzip", "a gzip body that cannot be decoded"),
        (gzip.compress(LEAD)[:-12], b"gzip", "a gzip body cut short"),
        (gzip.compress(LEAD) + b"more", b"gzip", "data after the end of the gzip body"),
        (b"\xff\xfe not deflate", b"deflate", "a deflate body that cannot be decoded"),
    ],
    ids=["zstd", "br", "corrupt", "cut-short", "trailing", "corrupt-deflate"],
)
async def test_an_undecodable_body_is_refused(nursery, body, coding, says):
    server = Server(replying(answer(body, b"Content-Encoding: " + coding)))
    err = await _refused(server, nursery)
    assert says in str(err)


async def test_header_count_and_size_limits_are_inclusive(nursery):
    """Planted bugs: ``>=`` for ``>`` in either check; a check deleted."""

    def headers(count: int, size: int = 1) -> list[bytes]:
        return [b"X-H%03d: %s" % (n, b"v" * size) for n in range(count)]

    # Content-Length is the first header: MAX_HEADERS in all
    at_count = Server(replying(answer(LEAD, *headers(MAX_HEADERS - 1))))
    await at_count.serve(nursery)
    async with sell_at(at_count.url, max_attempts=1) as sell:
        assert (await sell.get_lead(1)).id == 1
    past_count = Server(replying(answer(LEAD, *headers(MAX_HEADERS))))
    err = await _refused(past_count, nursery)
    assert f"more than {MAX_HEADERS} headers ({MAX_HEADERS + 1})" in str(err)

    length_line = len(b"Content-Length") + len(b"%d" % len(LEAD)) + 4
    value = MAX_HEADER_BYTES - length_line - len(b"X-H000") - 4
    at_size = Server(replying(answer(LEAD, *headers(1, value))))
    await at_size.serve(nursery)
    async with sell_at(at_size.url, max_attempts=1) as sell:
        assert (await sell.get_lead(1)).id == 1
    past_size = Server(replying(answer(LEAD, *headers(1, value + 1))))
    err = await _refused(past_size, nursery)
    assert f"headers larger than {MAX_HEADER_BYTES} bytes ({MAX_HEADER_BYTES + 1})" in str(err)


async def test_the_body_cap_is_inclusive_raw_and_decoded(nursery):
    """Planted bugs: ``>=`` for ``>`` on the raw or the decoded size."""
    cap = MiB
    head, tail = b'{"data":{"id":1,"pad":"', b'"}}'
    doc = head + b"p" * (cap - len(head) - len(tail)) + tail
    assert len(doc) == cap
    plain = Server(replying(answer(doc)))
    packed = Server(replying(answer(gzip.compress(doc), b"Content-Encoding: gzip")))
    for server in (plain, packed):
        await server.serve(nursery)
        async with sell_at(server.url, max_attempts=1, max_response_bytes=cap) as sell:
            assert (await sell.get("/v2/x"))["id"] == 1
    over = doc[:-2] + b" }}"
    err = await _refused(Server(replying(answer(over))), nursery, max_response_bytes=cap)
    assert f"a body larger than {cap} bytes" in str(err)
    over_packed = Server(replying(answer(gzip.compress(over), b"Content-Encoding: gzip")))
    err = await _refused(over_packed, nursery, max_response_bytes=cap)
    assert f"a body larger than {cap} bytes once decoded" in str(err)


async def test_a_create_past_a_limit_is_not_repeated_and_maybe_applied(nursery):
    """Retried like a 5xx: a POST may have been applied, so it is looked up, not repeated.
    Planted bug: the refusal mapped to "connect" (the create would be sent again)."""
    server = Server(replying(answer(LEAD, b"Content-Encoding: gzip, gzip")))
    await server.serve(nursery)
    async with sell_at(server.url, max_attempts=3) as sell:
        with pytest.raises(E.NetworkError) as got:
            await sell.create_lead({"last_name": "X"})
    assert got.value.maybe_applied and got.value.attempts == 1 and len(server.requests) == 1


def test_capped_body_fed_in_pieces_decodes_the_same():
    """The decoder across arbitrary chunk boundaries (1-byte pieces included)."""
    doc = b'{"data":{"x":"' + bytes(range(32, 127)) * 50 + b'"}}'
    for coding, packed in (
        ("gzip", gzip.compress(doc)),
        ("deflate", zlib.compress(doc)),
        ("identity", doc),
    ):
        for size in (1, 7, 4096):
            body = CappedBody(coding, len(doc))
            for i in range(0, len(packed), size):
                body.feed(packed[i : i + size])
            assert body.finish() == doc, (coding, size)


def test_the_decoded_size_adds_up_across_pieces():
    """Each piece decodes to less than the cap, together they pass it. Planted bug: the
    decoded size replaced by each piece's instead of summed."""
    doc = bytes(range(256)) * 40  # 10,240 bytes, barely compressible
    packed = gzip.compress(doc)
    body = CappedBody("gzip", 5000)
    with pytest.raises(httpx.RemoteProtocolError, match="a body larger than 5000 bytes once"):
        for i in range(0, len(packed), 100):
            body.feed(packed[i : i + 100])


def test_a_bomb_after_a_body_near_the_cap_yields_only_what_is_left():
    """zlib is asked for what is still allowed, not for the cap again. Planted bug:
    ``cap + size`` for ``cap - size`` (a second cap's worth decoded into memory)."""
    cap = 8 * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    near = deflate.compress(bytes(cap - 10)) + deflate.flush(zlib.Z_FULL_FLUSH)
    bomb = deflate.compress(bytes(64 * MiB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = CappedBody("gzip", cap)
    body.feed(near)
    assert body.size == cap - 10
    with peak_memory() as peak, pytest.raises(httpx.RemoteProtocolError, match="once decoded"):
        body.feed(bomb)
    assert body.size == cap + 1 and peak[0] < MiB


@pytest.mark.parametrize(
    ("values", "coding"),
    [
        ([], "identity"),
        (["identity"], "identity"),
        (["IDENTITY"], "identity"),
        (["gzip, identity"], "gzip"),
        (["identity", " Deflate "], "deflate"),
        ([", gzip,"], "gzip"),
    ],
)
def test_identity_and_blanks_are_no_coding(values, coding):
    """Planted bugs: "identity" counted as a coding (refused as stacked or unknown); its
    name compared case-sensitively; blank items counted."""
    assert coding_of(httpx.Headers([("Content-Encoding", v) for v in values])) == coding


def test_refusal_texts_name_what_was_wrong():
    """Planted bug: a message that no longer says which limit or coding it was."""

    def refused(headers) -> str:
        with pytest.raises(httpx.RemoteProtocolError) as err:
            check_head(httpx.Headers(headers))
            coding_of(httpx.Headers(headers))
        return str(err.value)

    assert refused([("Content-Length", "2"), ("Transfer-Encoding", "chunked")]) == (
        "Sell's answer was refused: both Content-Length and Transfer-Encoding"
    )
    assert refused([("Content-Encoding", "gzip, deflate")]) == (
        "Sell's answer was refused: stacked content codings (gzip, deflate)"
    )
    assert refused([("Content-Encoding", "br")]) == (
        "Sell's answer was refused: content coding 'br', which the client does not accept"
    )


def test_data_in_a_later_piece_after_the_end_of_the_body_is_refused():
    """Planted bug: the end-of-stream check only on the piece that ended it."""
    body = CappedBody("gzip", MiB)
    body.feed(gzip.compress(LEAD))
    with pytest.raises(httpx.RemoteProtocolError, match="data after the end of the gzip body"):
        body.feed(b"more")
