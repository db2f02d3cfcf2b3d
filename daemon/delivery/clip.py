"""Clipping: fetch a web page and keep its main content, links and images made absolute.

The fetch has a timeout and a size limit, follows at most a few redirects (each one
checked), and refuses private, loopback and link-local addresses unless
``[articles] allow_private_urls`` is on (an article file must not make the daemon read
internal services). Extraction uses readability-lxml, imported lazily (rarely used,
and heavy). Every failure is a ``ClipError`` with a readable reason: ``articles.import``
reports it as a problem line. This module talks HTTP to article pages, never to Sell.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import trio

MAX_REDIRECTS = 5


class ClipError(Exception):
    pass


@dataclass(frozen=True)
class Clipped:
    url: str  # after redirects
    title: str
    html: str


async def check_address(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClipError(f"not an http(s) address: {url}")
    if allow_private:
        return
    try:
        infos = await trio.socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        raise ClipError(f"cannot resolve {parts.hostname}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
                or address.is_multicast or address.is_unspecified):
            raise ClipError(f"{parts.hostname} is a private or loopback address ({address}); "
                            "set [articles] allow_private_urls = true to allow it")


async def fetch(url: str, *, timeout_seconds: float, max_bytes: int, allow_private: bool) -> tuple[str, str]:
    """(final URL, HTML text) of a page; ``ClipError`` on anything else."""
    timeout = timeout_seconds
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                 headers={"User-Agent": "KulooSync-clipper/1"}) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await check_address(url, allow_private)
            try:
                with trio.fail_after(timeout):
                    async with client.stream("GET", url) as response:
                        if response.is_redirect and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        if response.status_code != 200:
                            raise ClipError(f"{url} answered HTTP {response.status_code}")
                        kind = response.headers.get("content-type", "")
                        if "html" not in kind:
                            raise ClipError(f"{url} is not an HTML page ({kind or 'no content type'})")
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > max_bytes:
                                raise ClipError(f"{url} is larger than {max_bytes} bytes")
                        return url, body.decode(response.encoding or "utf-8", errors="replace")
            except trio.TooSlowError:
                raise ClipError(f"{url} did not answer within {timeout:g}s") from None
            except httpx.HTTPError as exc:
                raise ClipError(f"cannot fetch {url}: {type(exc).__name__}") from None
        raise ClipError(f"{url}: more than {MAX_REDIRECTS} redirects")


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
    root.make_links_absolute(url, resolve_base_href=True)
    html = lxml.html.tostring(root, encoding="unicode", method="html")
    if not root.text_content().strip():
        raise ClipError(f"{url} has no readable content")
    return Clipped(url, title.strip(), html)


async def clip(url: str, *, timeout_seconds: float, max_bytes: int, allow_private: bool) -> Clipped:
    final, page = await fetch(url, timeout_seconds=timeout_seconds, max_bytes=max_bytes, allow_private=allow_private)
    return await trio.to_thread.run_sync(extract, final, page)
