"""Wire (the Sell client's HTTP/1.1 transport) against scripted servers on loopback.

Each test runs a real trio TCP (or TLS) server whose handler writes exactly the bytes a
server could send, so framing, keep-alive, failures and TLS are seen on a real socket.
"""

from __future__ import annotations

import gzip
import ssl
import struct
from functools import partial

import httpx
import pytest
import trio
import trustme

from kuloo_daemon.crm import errors as E
from kuloo_daemon.crm import wire as wire_module
from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.crm.wire import Wire
from kuloo_daemon.secrets import Secret

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


class Server:
    """A loopback server running ``handler(stream, server)`` per connection; counts them."""

    def __init__(self, handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
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


async def get(wire: Wire, url: str, method: str = "GET", **kw) -> httpx.Response:
    response = await wire.handle_async_request(httpx.Request(method, url, **kw))
    await response.aread()
    return response


# ---------------------------------------------------------------------- framing, keep-alive


async def test_requests_share_one_connection_and_are_framed_exactly(nursery):
    server = Server(replying(OK))
    await server.serve(nursery)
    wire = Wire()
    for n in range(3):
        response = await get(wire, f"{server.url}/v2/leads/{n}?a=1&b=x%20y", method="PUT",
                             content=b'{"x":1}', headers={"Authorization": "Bearer t"})  # fmt: skip
        assert response.status_code == 200 and response.json() == {"ok": True}
        assert response.http_version == "HTTP/1.1"
    assert server.connections == 1
    head, body = server.requests[2].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /v2/leads/2?a=1&b=x%20y HTTP/1.1"
    assert f"Host: localhost:{server.port}".encode() in lines
    assert b"Content-Length: 7" in lines and b"Authorization: Bearer t" in lines
    assert body == b'{"x":1}'
    await wire.aclose()


async def test_chunked_body_is_decoded_and_the_connection_kept(nursery):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n5\r\n:\"b\"}\r\n0\r\n\r\n")  # fmt: skip
    server = Server(replying(chunked))
    await server.serve(nursery)
    wire = Wire()
    assert (await get(wire, server.url + "/")).json() == {"a": "b"}
    assert (await get(wire, server.url + "/")).json() == {"a": "b"}
    assert server.connections == 1


async def test_a_body_read_until_close_is_whole_and_its_connection_not_reused(nursery):
    server = Server(replying(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 200_000, close_after=True))
    await server.serve(nursery)
    wire = Wire()
    assert (await get(wire, server.url + "/")).content == b"x" * 200_000
    assert (await get(wire, server.url + "/")).content == b"x" * 200_000
    assert server.connections == 2


async def test_a_body_under_another_transfer_coding_is_read_until_close(nursery):
    server = Server(replying(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes", close_after=True))
    await server.serve(nursery)
    assert (await get(Wire(), server.url + "/")).content == b"raw bytes"


async def test_a_large_body_across_many_reads(nursery):
    big = b"y" * 1_000_000
    server = Server(replying(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big))
    await server.serve(nursery)
    wire = Wire()
    assert (await get(wire, server.url + "/")).content == big
    assert (await get(wire, server.url + "/")).content == big
    assert server.connections == 1


async def test_gzip_content_is_decoded(nursery):
    packed = gzip.compress(b'{"data":{"id":1}}')
    server = Server(replying(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                             % len(packed) + packed))  # fmt: skip
    await server.serve(nursery)
    assert (await get(Wire(), server.url + "/")).json() == {"data": {"id": 1}}


async def test_connection_close_and_expiry_open_a_new_connection(nursery):
    server = Server(replying(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
    await server.serve(nursery)
    wire = Wire()
    await get(wire, server.url + "/")
    await get(wire, server.url + "/")
    assert server.connections == 2

    server2 = Server(replying(OK))
    await server2.serve(nursery)
    expired = Wire(keepalive_expiry=0)
    await get(expired, server2.url + "/")
    await get(expired, server2.url + "/")
    assert server2.connections == 2


async def test_head_and_204_carry_no_body_and_keep_the_connection(nursery):
    server = Server(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
                             b"HTTP/1.1 204 No Content\r\n\r\n", OK))  # fmt: skip
    await server.serve(nursery)
    wire = Wire()
    head = await get(wire, server.url + "/", method="HEAD")  # no body, whatever Content-Length says
    assert head.status_code == 200 and head.content == b""
    assert (await get(wire, server.url + "/", method="DELETE")).status_code == 204
    assert (await get(wire, server.url + "/")).json() == {"ok": True}
    assert server.connections == 1


async def test_an_informational_answer_is_skipped(nursery):
    async def hint_then_answer(stream, server):
        await server.read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await trio.sleep(0.05)  # so the client reads the hint on its own
        await stream.send_all(OK)

    server = Server(hint_then_answer)
    await server.serve(nursery)
    response = await get(Wire(), server.url + "/")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert "link" not in response.headers


async def test_an_idle_connection_the_server_closed_is_not_used(nursery):
    server = Server(replying(OK, close_after=True))  # closes without saying so
    await server.serve(nursery)
    wire = Wire()
    await get(wire, server.url + "/")
    await server.closed.wait()
    assert (await get(wire, server.url + "/", method="POST", content=b"{}")).json() == {"ok": True}
    assert server.connections == 2


async def test_at_most_max_connections_are_open(nursery):
    async def slow(stream, server):
        buf = bytearray()
        while await server.read_request(stream, buf) is not None:
            await trio.sleep(0.02)
            await stream.send_all(OK)

    server = Server(slow)
    await server.serve(nursery)
    wire = Wire(max_connections=2)
    async with trio.open_nursery() as inner:
        for _ in range(8):
            inner.start_soon(get, wire, server.url + "/")
    assert server.most_open == 2 and len(server.requests) == 8


async def test_aclose_closes_idle_connections(nursery):
    server = Server(replying(OK))
    await server.serve(nursery)
    wire = Wire()
    await get(wire, server.url + "/")
    await wire.aclose()
    await server.closed.wait()  # the server read EOF
    with pytest.raises(RuntimeError, match="^the transport is closed$"):
        await get(wire, server.url + "/")


# ---------------------------------------------------------------------- failures


async def test_refused_connection_is_a_connect_error():
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError, match=f"^cannot connect to 127.0.0.1:{port}: "):
        await get(Wire(), f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(("answer", "says"), [
    (b"", "^the server closed the connection without a complete response$"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut",
     "^the server closed the connection in the middle of the response body$"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "^the server closed the connection without a complete response$"),
    (b"hello there\r\n\r\n", "^the server's reply is not HTTP/1.1: "),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "^the server's reply is not HTTP/1.1: "),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     "^the server switched protocols$"),
], ids=["no-answer", "cut-body", "cut-head", "not-http", "two-lengths", "upgrade"])  # fmt: skip
async def test_a_broken_answer_is_a_protocol_error_and_the_connection_dropped(nursery, answer, says):
    server = Server(replying(answer, close_after=True))
    await server.serve(nursery)
    wire = Wire()
    with pytest.raises(httpx.RemoteProtocolError, match=says):
        await get(wire, server.url + "/")
    assert not any(wire._idle.values())


async def test_no_answer_in_time_is_a_read_timeout_and_closes_the_connection(nursery):
    async def silent(stream, server):
        await server.read_request(stream, bytearray())
        assert await stream.receive_some(10) == b""  # the client gave up and closed

    server = Server(silent)
    await server.serve(nursery)
    request = httpx.Request("GET", server.url + "/", extensions={"timeout": {"read": 0.1}})
    with pytest.raises(httpx.ReadTimeout, match="^no complete answer within 0.1 s$"):
        await Wire().handle_async_request(request)
    await server.closed.wait()


async def test_a_cancelled_exchange_is_never_reused(nursery):
    answered = []

    async def late_then_ok(stream, server):
        buf = bytearray()
        while await server.read_request(stream, buf) is not None:
            if not answered:
                answered.append(1)
                await trio.sleep(0.3)  # the client has given up by now
            await stream.send_all(OK)

    server = Server(late_then_ok)
    await server.serve(nursery)
    wire = Wire()
    with trio.move_on_after(0.05):
        await get(wire, server.url + "/")
    # the late answer must not be taken for the next request's
    assert (await get(wire, server.url + "/")).json() == {"ok": True}
    assert server.connections == 2


async def test_a_header_with_a_line_break_is_refused_before_sending(nursery):
    server = Server(replying(OK))
    await server.serve(nursery)
    for value in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b"):
        with pytest.raises(httpx.LocalProtocolError, match="^a request header holds a line break or NUL$"):
            await get(Wire(), server.url + "/", headers={"X-Note": value})
    assert server.requests == []


async def test_a_request_the_server_refuses_to_read_is_a_write_error(nursery):
    async def reset(stream, server):
        while b"\r\n\r\n" not in await stream.receive_some():  # the head, then not the body
            pass
        stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()

    server = Server(reset)
    await server.serve(nursery)
    with pytest.raises(httpx.WriteError, match="^sending the request failed: .*(reset|pipe)"):
        await get(Wire(), server.url + "/", method="POST", content=b"x" * 64_000_000)  # past every buffer


async def test_unsupported_scheme():
    with pytest.raises(httpx.UnsupportedProtocol, match="^unsupported URL scheme 'ftp'$"):
        await get(Wire(), "ftp://localhost/")


@pytest.mark.parametrize(("url", "origin"), [
    ("https://api.getbase.com/v2/leads", (b"https", b"api.getbase.com", 443)),
    ("http://sell.test/v2/leads", (b"http", b"sell.test", 80)),
    ("https://sell.test:8443/", (b"https", b"sell.test", 8443)),
    ("http://127.0.0.1:4000/", (b"http", b"127.0.0.1", 4000)),
])  # fmt: skip
def test_the_origin_defaults_the_port_by_scheme(url, origin):
    assert wire_module._origin(httpx.URL(url)) == origin


async def test_a_reset_connection_is_a_read_error(nursery):
    async def reset(stream, server):
        await server.read_request(stream, bytearray())
        stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()  # linger 0: the client gets a RST, not a FIN

    server = Server(reset)
    await server.serve(nursery)
    with pytest.raises(httpx.ReadError, match="^reading the response failed: .*reset"):
        await get(Wire(), server.url + "/")


async def test_sell_client_over_wire_reports_a_cut_connection_as_network_error(nursery):
    """The client's retry rules see Wire's failures: a GET is retried, a POST is maybe applied."""
    server = Server(replying(b"", close_after=True))
    await server.serve(nursery)
    token = "z9" * 32
    sell = SellClient(server.url, Secret(token), budget=RateBudget(1000.0), backoff_base=0.001,
                      backoff_cap=0.001, max_attempts=3)  # fmt: skip
    async with sell:
        with pytest.raises(E.NetworkError) as got:
            await sell.get_lead(1)
        assert got.value.attempts == 3 and token not in str(got.value)
        with pytest.raises(E.NetworkError) as got:
            await sell.create_lead({"last_name": "X"})
        assert got.value.maybe_applied and got.value.attempts == 1
    assert len(server.requests) == 4


# ---------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_server(ca: trustme.CA, handler=None, name: str = "localhost") -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return Server(handler or replying(OK), ssl_context=context)


async def test_https_with_a_trusted_certificate(nursery, ca):
    server = tls_server(ca)
    await server.serve(nursery)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    wire = Wire(ssl_context=client_context)
    assert (await get(wire, server.url + "/")).json() == {"ok": True}
    assert (await get(wire, server.url + "/")).json() == {"ok": True}
    assert server.connections == 1
    await wire.aclose()


async def test_https_refuses_an_untrusted_certificate(nursery, ca):
    server = tls_server(ca)
    await server.serve(nursery)
    with pytest.raises(httpx.ConnectError, match=f"^TLS with localhost:{server.port} failed: .*certificate"):
        await get(Wire(), server.url + "/")  # certifi's store does not know the test CA


async def test_https_refuses_a_certificate_for_another_host(nursery, ca):
    server = tls_server(ca, name="sell.example")
    await server.serve(nursery)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with pytest.raises(httpx.ConnectError, match="match|mismatch"):
        await get(Wire(ssl_context=client_context), server.url + "/")


async def test_https_body_read_until_close_without_a_tls_goodbye(nursery, ca):
    """Servers often end a read-until-close body by closing TCP without TLS's close_notify
    (browsers and httpx accept it): the body is whole."""
    server = tls_server(ca, replying(b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 5000, close_after=True))
    await server.serve(nursery)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    assert (await get(Wire(ssl_context=client_context), server.url + "/")).content == b"z" * 5000


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
        request = httpx.Request("GET", f"http://127.0.0.1:{port}/",
                                extensions={"timeout": {"connect": 0.2, "read": 5}})  # fmt: skip
        with pytest.raises(httpx.ConnectTimeout, match=f"^no connection to 127.0.0.1:{port} within 0.2 s$"):
            await Wire().handle_async_request(request)
        for filler in fillers:
            filler.close()


async def test_connections_past_descriptor_1023_are_reused(nursery):
    """select() cannot watch such descriptors; a check built on it would drop every connection."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"the descriptor limit {hard} is below 1100")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        server = Server(replying(OK))
        await server.serve(nursery)
        wire = Wire()
        for _ in range(3):
            await get(wire, server.url + "/")
        assert server.connections == 1
        await wire.aclose()
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
