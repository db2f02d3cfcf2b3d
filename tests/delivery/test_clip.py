"""Clipping against a hostile page or resolver (issue 20 item 4): DNS rebinding, addresses
that are not on the public Internet, proxies from the environment, compression bombs, and
TLS checked for the name while the connection goes to the checked address.

The pages are served on loopback by real HTTP(S) servers; names are answered by trio's own
hook for a custom hostname resolver, which every lookup in the process goes through (the
clipper's and, before the fix, httpx's own second lookup).
"""

from __future__ import annotations

import errno
import gzip
import ipaddress
import socket
import ssl
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio

from kuloo_daemon.delivery.clip import ClipError, check_address, extract, fetch, is_allowed

PAGE = (
    b"<html><head><title>Hi</title></head><body><p>"
    + b"Readable text. " * 40
    + b"</p></body></html>"
)
PUBLIC = "1.1.1.1"  # global: the clipper may connect to it (NoInternet refuses it at once)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.hits.append((self.path, self.headers.get("Host")))
        headers, body = self.server.routes.get(self.path, ({"Content-Type": "text/html"}, PAGE))
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.hits, server.routes = [], {}
    server.daemon_threads = True
    server.handle_error = lambda *_: None  # a client that gave up is expected
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def site():
    yield from _serve()


class Resolver(trio.abc.HostnameResolver):
    """Answers names from a table; each name's answers are used in turn (the last repeats)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        self.asked.append(name)
        if name not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.table[name]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port), 0, 0) if family == socket.AF_INET6 else (address, int(port))
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    async def getnameinfo(self, sockaddr, flags):
        raise NotImplementedError


def _resolve_with(table: dict[str, list[str]]) -> Resolver:
    resolver = Resolver(table)
    trio.socket.set_custom_hostname_resolver(resolver)  # for this test's trio run only
    return resolver


class NoInternet(trio.abc.SocketFactory):
    """Real sockets, each connection recorded; one to a global address is refused at once
    (tests never reach the Internet)."""

    def __init__(self) -> None:
        self.connects: list[str] = []

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):
        sock = trio.socket.from_stdlib_socket(socket.socket(family, type, proto))
        real = sock.connect

        async def connect(address):
            self.connects.append(address[0])
            if ipaddress.ip_address(address[0]).is_global:
                raise ConnectionRefusedError(errno.ECONNREFUSED, "refused: no Internet in tests")
            return await real(address)

        sock.connect = connect
        return sock


async def test_a_rebinding_resolver_never_gets_loopback_fetched(site):
    """Public at the check, 127.0.0.1 at the connection: the page on loopback is never
    read, because the connection goes to the address that was checked (resolved once).
    Planted bug: the check's result not used for the connection (httpx resolves again)."""
    resolver = _resolve_with({"rebind.example": [PUBLIC, "127.0.0.1"]})
    sockets = NoInternet()
    trio.socket.set_custom_socket_factory(sockets)
    with pytest.raises(ClipError, match="ConnectError"):
        await fetch(
            f"http://rebind.example:{site.server_port}/page.html",
            timeout_seconds=5,
            max_bytes=100_000,
            allow_private=False,
        )
    assert site.hits == []
    assert resolver.asked == ["rebind.example"] and sockets.connects == [PUBLIC]


async def test_the_name_travels_in_the_host_header_to_the_checked_address(site):
    """Planted bug: the Host header left to httpx (it would name the address)."""
    resolver = _resolve_with({"pages.example": ["127.0.0.1", "10.255.255.1"]})
    url = f"http://pages.example:{site.server_port}/page.html"
    final, page = await fetch(url, timeout_seconds=5, max_bytes=100_000, allow_private=True)
    assert (final, "Readable text." in page) == (url, True)
    assert site.hits == [("/page.html", f"pages.example:{site.server_port}")]
    assert resolver.asked == ["pages.example"]


@pytest.mark.parametrize(
    "address",
    [
        "100.100.100.200",
        "100.64.0.1",
        "100.127.255.254",  # carrier-grade NAT (100.64.0.0/10)
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "224.0.0.1",
        "239.1.2.3",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "2001:db8::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:127.0.0.1",
        "::ffff:100.100.100.200",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "::127.0.0.1",
        "::100.100.100.200",
        "::10.0.0.1",  # IPv4-compatible
        "2002:7f00:1::1",
        "2002:6464:64c8::1",
        "2002:a00:1::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "64:ff9b::7f00:1",
        "64:ff9b::6464:64c8",
        "64:ff9b::a00:1",  # NAT64
        "64:ff9b:1:7f00:0:1::",
        "64:ff9b:1:6464:64:c800::",
        "64:ff9b:1:a00:0:1::",  # local NAT64
    ],
)
def test_only_addresses_on_the_public_internet_are_allowed(address):
    """An allow rule: ``is_global``, not multicast, and every embedded IPv4 global too.
    Planted bugs: a deny list (100.64.0.0/10 passes), each embedded form not checked,
    multicast let through, the RFC 6052 /48 octets read from the wrong place."""
    assert not is_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.128.0.1",
        "100.63.255.255",
        "2606:4700:4700::1111",
        "64:ff9b::808:808",
        "64:ff9b:1:808:8:800::",
        "2002:808:808::1",
    ],
)
def test_public_addresses_and_their_embeddings_are_allowed(address):
    """Planted bug: every NAT64 or 6to4 address refused whatever it embeds; the CGN range
    widened past its /10."""
    assert is_allowed(ipaddress.ip_address(address))


async def test_carrier_grade_nat_is_refused_by_the_check():
    with pytest.raises(ClipError, match=r"private or loopback address \(100\.100\.100\.200\)"):
        await check_address("http://100.100.100.200/latest/meta-data/", allow_private=False)
    _resolve_with({"cgn.example": ["8.8.8.8", "100.64.0.9"]})
    await check_address("http://cgn.example/", allow_private=False)  # first answer: public
    with pytest.raises(ClipError, match="100.64.0.9"):  # second answer (each is checked)
        await check_address("http://cgn.example/", allow_private=False)


async def test_no_proxy_from_the_environment(site, monkeypatch):
    """A proxy would resolve the name itself (and read internal pages for us). Planted
    bug: ``trust_env`` left on."""
    for proxy in _serve():
        for name in (
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        await fetch(
            f"http://127.0.0.1:{site.server_port}/page.html",
            timeout_seconds=5,
            max_bytes=100_000,
            allow_private=True,
        )
        assert proxy.hits == [] and [path for path, _host in site.hits] == ["/page.html"]


def _bomb(gigabytes: float = 2.0) -> tuple[bytes, int]:
    """(one gzip layer inflating to ``gigabytes`` of zeros, its size): full flushes make
    every megabyte compress to the same bytes, so it is built without compressing 2 GB."""
    megabyte = bytes(1 << 20)
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = z.compress(megabyte) + z.flush(zlib.Z_FULL_FLUSH)
    same = z.compress(megabyte) + z.flush(zlib.Z_FULL_FLUSH)
    count = int(gigabytes * 1024)
    return head + same * (count - 1) + z.flush(), count << 20  # no valid trailer: never reached


async def test_stacked_gzip_is_refused_before_anything_is_inflated(site):
    """The issue's 1,828 bytes of ``gzip, gzip`` inflated to 2 GB before the size check;
    this one is 4.9 KB for the same 2 GB. Planted bugs: httpx's own decoding (every
    layer), the codings not counted, a repeated header not joined."""
    inner, _size = _bomb()
    outer = gzip.compress(inner, 9)
    assert len(outer) < 8192
    site.routes["/bomb.html"] = (
        {"Content-Type": "text/html", "Content-Encoding": "gzip, gzip"},
        outer,
    )
    site.routes["/bomb2.html"] = (
        {"Content-Type": "text/html", "Content-Encoding": "gzip", "content-encoding": "gzip"},
        outer,
    )
    tracemalloc.start()
    try:
        for path in ("/bomb.html", "/bomb2.html"):
            with pytest.raises(ClipError, match="stacked content codings"):
                await fetch(
                    f"http://127.0.0.1:{site.server_port}{path}",
                    timeout_seconds=10,
                    max_bytes=2_000_000,
                    allow_private=True,
                )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak


async def test_a_gzip_bomb_stops_at_the_size_limit_of_decoded_bytes(site):
    """One layer, 2 MB on the wire, 2 GB inflated: refused once the decoded bytes pass
    ``clip_max_bytes``, with little memory. Planted bugs: the limit applied to the raw
    bytes only, the whole chunk inflated at once."""
    inner, size = _bomb()
    assert size == 2 * 2**30
    site.routes["/bomb.html"] = ({"Content-Type": "text/html", "Content-Encoding": "gzip"}, inner)
    tracemalloc.start()
    try:
        with pytest.raises(ClipError, match="larger than 2000000 bytes"):
            await fetch(
                f"http://127.0.0.1:{site.server_port}/bomb.html",
                timeout_seconds=10,
                max_bytes=2_000_000,
                allow_private=True,
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak


@pytest.mark.parametrize(
    "coding, encode",
    [
        ("gzip", lambda b: gzip.compress(b)),
        ("x-gzip", lambda b: gzip.compress(b)),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send
        ("identity", lambda b: b),
        ("GZip", lambda b: gzip.compress(b)),
    ],
)
async def test_one_gzip_or_deflate_layer_is_decoded(site, coding, encode):
    site.routes["/p.html"] = (
        {"Content-Type": "text/html; charset=utf-8", "Content-Encoding": coding},
        encode(PAGE),
    )
    _final, page = await fetch(
        f"http://127.0.0.1:{site.server_port}/p.html",
        timeout_seconds=5,
        max_bytes=100_000,
        allow_private=True,
    )
    assert page == PAGE.decode()


@pytest.mark.parametrize(
    "coding, body, problem",
    [
        ("br", b"\x0b\x02\x80hello\x03", "content coding 'br'"),
        ("compress", b"\x1f\x9d", "content coding 'compress'"),
        ("deflate, gzip", b"x", "stacked content codings (deflate, gzip)"),
        ("gzip", b"not gzip at all", "not valid gzip"),
    ],
)
async def test_unknown_stacked_or_broken_codings_are_refused(site, coding, body, problem):
    site.routes["/p.html"] = ({"Content-Type": "text/html", "Content-Encoding": coding}, body)
    with pytest.raises(ClipError) as err:
        await fetch(
            f"http://127.0.0.1:{site.server_port}/p.html",
            timeout_seconds=5,
            max_bytes=100_000,
            allow_private=True,
        )
    assert problem in str(err.value)


async def test_tls_checks_the_name_while_connecting_to_the_checked_address():
    """The URL carries the address, so TLS must be told the name: SNI and the certificate
    check use it. Planted bugs: no ``sni_hostname`` (the certificate is checked against
    127.0.0.1 and fails), a certificate for another name accepted."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("clip.example")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    for server in _serve(server_ctx):
        _resolve_with({"clip.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
        url = f"https://clip.example:{server.server_port}/page.html"
        _final, page = await fetch(
            url, timeout_seconds=5, max_bytes=100_000, allow_private=True, verify=client_ctx
        )
        assert "Readable text." in page
        assert server.hits == [("/page.html", f"clip.example:{server.server_port}")]
        assert names == ["clip.example"]
        with pytest.raises(ClipError, match="ConnectError"):  # the certificate names clip.example
            await fetch(
                f"https://other.example:{server.server_port}/page.html",
                timeout_seconds=5,
                max_bytes=100_000,
                allow_private=True,
                verify=client_ctx,
            )
        assert len(server.hits) == 1


@pytest.mark.parametrize(
    "url",
    ["http://x.example:99999/", "ftp://x.example/", "http:///nohost", "http://exa mple.example/"],
)
async def test_malformed_addresses_are_clip_errors(url):
    _resolve_with({})  # no name resolves
    with pytest.raises(ClipError):
        await fetch(url, timeout_seconds=2, max_bytes=100_000, allow_private=True)


def test_the_pages_own_headline_is_not_repeated_under_the_title():
    """The real sample page (config/clip-pages/compost.html) opens its article with an h1
    that is its title: the email shows the title once. A first heading that says something
    else stays. Planted bug: the headline kept (the digest read "Compost in winter" twice)."""
    page = (Path(__file__).parents[2] / "config" / "clip-pages" / "compost.html").read_text()
    clipped = extract("https://blog.example/compost.html", page)
    assert clipped.title == "Compost in winter"
    assert "<h1" not in clipped.html and "Compost slows down in the cold" in clipped.html
    other = page.replace("<h1>Compost in winter</h1>", "<h1>Why compost at all?</h1>")
    assert "Why compost at all?" in extract("https://blog.example/compost.html", other).html
