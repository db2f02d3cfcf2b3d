"""Clipping: fetch a web page and keep its main content, links and images made absolute.

The fetch has a timeout and a size limit, follows at most a few redirects (each one
checked), and reads only globally reachable addresses unless
``[articles] allow_private_urls`` is on (an article file must not make the daemon read
internal services). Extraction uses readability-lxml, imported lazily (rarely used,
and heavy). Every failure is a ``ClipError`` with a readable reason: ``articles.import``
reports it as a problem line. This module talks HTTP to article pages, never to Sell.

What a hostile page or resolver cannot do:

- **Reach a private address.** An address is allowed only when it is ``is_global`` (an
  allow rule, not a deny list: carrier-grade NAT, benchmarking and documentation ranges
  are refused with the rest), not multicast, and every IPv4 address embedded in it
  (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64 ``64:ff9b::/96`` and
  ``64:ff9b:1::/48``) is global too. Every address a name resolves to must pass.
- **Rebind its name.** The name is resolved once (:func:`resolve`) and the connection goes
  to the address that was checked: the request's URL carries the address, the ``Host``
  header and TLS (server name and certificate check) carry the name. Each hop of a
  redirect is resolved and checked again, on a connection of its own.
- **Use a proxy.** Proxies from the environment are ignored (``trust_env=False``): a proxy
  would resolve the name itself.
- **Inflate a bomb.** The body is read raw and decoded here: at most one ``gzip`` or
  ``deflate`` layer (stacked or unknown codings are refused before a byte is read), the
  size limit applied to the decoded bytes as they are inflated, a bounded piece at a time.
"""

from __future__ import annotations

import codecs
import ipaddress
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import trio

MAX_REDIRECTS = 5
_PIECE = 64 * 1024  # most bytes inflated at once
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClipError(Exception):
    pass


@dataclass(frozen=True)
class Clipped:
    url: str  # after redirects
    title: str
    html: str


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries (and would reach through a gateway)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if int(address) >> 32 == 0:  # IPv4-compatible ::a.b.c.d (deprecated, still routed by some)
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:  # RFC 6052 /48: octets 6-7 and 9-10 (octet 8 is zero)
        packed = address.packed
        found.append(ipaddress.IPv4Address(packed[6:8] + packed[9:11]))
    return found


def is_allowed(address: Address) -> bool:
    """True for an address on the public Internet, whatever it embeds."""
    if not address.is_global or address.is_multicast:
        return False
    return all(v4.is_global and not v4.is_multicast for v4 in embedded_ipv4(address))


async def resolve(host: str, port: int) -> list[Address]:
    """The addresses of ``host``, in the resolver's order, each once."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError:
        raise ClipError(f"cannot resolve {host}") from None
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise ClipError(f"cannot resolve {host}")
    return found


async def check_address(url: str, allow_private: bool) -> list[Address]:
    """The addresses to connect to for ``url``, resolved once; ``ClipError`` if any of them
    is not allowed (unless ``allow_private``)."""
    parts = urlsplit(url)
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise ClipError(f"not an http(s) address: {url}") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ClipError(f"not an http(s) address: {url}")
    addresses = await resolve(hostname, port or (443 if parts.scheme == "https" else 80))
    if not allow_private:
        for address in addresses:
            if not is_allowed(address):
                raise ClipError(
                    f"{hostname} is a private or loopback address ({address}); "
                    "set [articles] allow_private_urls = true to allow it"
                )
    return addresses


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class _Inflater:
    """One gzip or deflate layer, inflated a bounded piece at a time."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding in ("gzip", "x-gzip") else None

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        if self._z is None:  # deflate: zlib-wrapped as RFC 9110 says, or raw as some send it
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        while data and not self._z.eof:
            out += self._z.decompress(data, max(1, min(_PIECE, limit + 1 - len(out))))
            if len(out) > limit:
                return
            data = self._z.unconsumed_tail


def _inflater(response: httpx.Response, url: str) -> _Inflater | None:
    header = ",".join(response.headers.get_list("content-encoding"))
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > 1:
        raise ClipError(
            f"{url} is sent with stacked content codings ({', '.join(codings)}); "
            "at most one is accepted"
        )
    if not codings:
        return None
    if codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise ClipError(
            f"{url} is sent with the content coding {codings[0]!r} "
            "(only gzip and deflate are accepted)"
        )
    return _Inflater(codings[0])


async def _read_body(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    inflater = _inflater(response, url)
    raw_limit = max_bytes + max_bytes // 16 + 1024  # compressed data never grows more
    body = bytearray()
    raw = 0
    try:
        async for chunk in response.aiter_raw():
            raw += len(chunk)
            if inflater is None:
                body += chunk
            else:
                inflater.feed(chunk, body, max_bytes)
            if len(body) > max_bytes or raw > raw_limit:
                raise ClipError(f"{url} is larger than {max_bytes} bytes")
    except zlib.error:
        raise ClipError(f"{url} is not valid {inflater.coding if inflater else 'data'}") from None
    return bytes(body)


def _charset(response: httpx.Response) -> str:
    name = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        return "utf-8"
    return name


async def _get_from(
    url: str,
    address: Address,
    *,
    http_timeout: float,
    max_bytes: int,
    verify: ssl.SSLContext | bool,
) -> str:
    """GET ``url`` from ``address`` (the checked one), with the name in Host and TLS."""
    target = httpx.URL(url)
    headers = {
        "User-Agent": "KulooSync-clipper/1",
        "Accept-Encoding": "gzip, deflate",
        "Host": target.netloc.decode("ascii"),
    }
    # A client per connection: a pooled TLS connection checked for one name must never
    # serve another name that resolved to the same address.
    async with httpx.AsyncClient(
        timeout=http_timeout, follow_redirects=False, trust_env=False, verify=verify
    ) as client:
        request = client.build_request(
            "GET",
            target.copy_with(host=str(address)),
            headers=headers,
            extensions={"sni_hostname": target.raw_host.decode("ascii")},
        )
        response = await client.send(request, stream=True)
        try:
            if response.is_redirect and "location" in response.headers:
                raise _Redirect(urljoin(url, response.headers["location"]))
            if response.status_code != 200:
                raise ClipError(f"{url} answered HTTP {response.status_code}")
            kind = response.headers.get("content-type", "")
            if "html" not in kind:
                raise ClipError(f"{url} is not an HTML page ({kind or 'no content type'})")
            body = await _read_body(response, url, max_bytes)
            return body.decode(_charset(response), errors="replace")
        finally:
            await response.aclose()


async def fetch(
    url: str,
    *,
    timeout_seconds: float,
    max_bytes: int,
    allow_private: bool,
    verify: ssl.SSLContext | bool = True,
) -> tuple[str, str]:
    """(final URL, HTML text) of a page; ``ClipError`` on anything else.

    ``verify`` is httpx's: tests pass their own certificate authority."""
    timeout = timeout_seconds
    for _ in range(MAX_REDIRECTS + 1):
        addresses = await check_address(url, allow_private)
        try:
            with trio.fail_after(timeout):
                for n, address in enumerate(addresses):
                    try:
                        page = await _get_from(
                            url, address, http_timeout=timeout, max_bytes=max_bytes, verify=verify
                        )
                    except httpx.ConnectError:
                        if n + 1 == len(addresses):
                            raise
                        continue  # the next checked address of the same name
                    return url, page
        except _Redirect as redirect:
            url = redirect.location
            continue
        except trio.TooSlowError:
            raise ClipError(f"{url} did not answer within {timeout:g}s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ClipError(f"cannot fetch {url}: {type(exc).__name__}") from None
    raise ClipError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _drop_leading_title(root, title: str) -> None:
    """The page's own headline, when it opens the content and repeats the title: the email
    shows the title already (a reader saw "Compost in winter" twice in a row)."""
    words = " ".join(title.split()).casefold()
    for el in root.iter():
        if isinstance(el.tag, str) and el.text and el.text.strip():
            if (
                el.tag in ("h1", "h2", "h3")
                and " ".join(el.text_content().split()).casefold() == words
            ):
                el.drop_tree()  # its tail stays
            return


def extract(url: str, page: str) -> Clipped:
    """The page's main content (readability), every link and image absolute."""
    import lxml.html
    from readability import Document

    try:
        doc = Document(page)
        summary = doc.summary(html_partial=True)
        title = doc.short_title() or ""
    except Exception as exc:  # readability raises bare exceptions on odd pages
        raise ClipError(f"cannot find the main content of {url}: {exc}") from None
    root = lxml.html.fragment_fromstring(summary, create_parent="div")
    _drop_leading_title(root, title)
    root.make_links_absolute(url, resolve_base_href=True)
    html = lxml.html.tostring(root, encoding="unicode", method="html")
    if not root.text_content().strip():
        raise ClipError(f"{url} has no readable content")
    return Clipped(url, title.strip(), html)


async def clip(url: str, *, timeout_seconds: float, max_bytes: int, allow_private: bool) -> Clipped:
    final, page = await fetch(
        url, timeout_seconds=timeout_seconds, max_bytes=max_bytes, allow_private=allow_private
    )
    return await trio.to_thread.run_sync(extract, final, page)
