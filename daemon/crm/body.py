"""Reading one Sell response under limits: its head's size, and its body's decoded size.

A hostile or broken server at ``[sell] base_url`` must not make the daemon read without
end. Refused with ``httpx.RemoteProtocolError`` (to the client's retry rules a protocol
error, retried like a 5xx): a response with more than ``MAX_HEADERS`` headers or
``MAX_HEADER_BYTES`` of them, or with both Content-Length and Transfer-Encoding; a body
whose raw or decoded size passes the client's ``max_response_bytes``; a body under stacked
content codings (``Content-Encoding: gzip, gzip``) or a coding the client never asked
for; a compressed body that is corrupt, cut short or followed by more data.

The raw body is read as it arrives (``aiter_raw``, so httpx never decodes it whole) and at
most one gzip or deflate layer is decoded with zlib, asking it for no more than the bytes
still allowed, so a 1 MB gzip bomb stops at the cap instead of expanding in memory.
Imports httpx and the standard library.
"""

from __future__ import annotations

import zlib

import httpx

MAX_HEADERS = 100
# Names and values with their ": " and CRLF. httpcore already stops a head past 100 KiB
# while reading it, so memory is bounded before this check.
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

# zlib's window bits: gzip's wrapper, zlib's wrapper (what "deflate" means in HTTP) and,
# as browsers and httpx accept it, a raw deflate stream under "deflate".
_GZIP = zlib.MAX_WBITS | 16
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS
_CODINGS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def refused(text: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"Sell's answer was refused: {text}")


def check_head(headers: httpx.Headers) -> None:
    """Refuse a head with too many headers, too many bytes of them, or two framings."""
    raw = headers.raw
    if len(raw) > MAX_HEADERS:
        raise refused(f"more than {MAX_HEADERS} headers ({len(raw)})")
    size = sum(len(name) + len(value) + 4 for name, value in raw)
    if size > MAX_HEADER_BYTES:
        raise refused(f"headers larger than {MAX_HEADER_BYTES} bytes ({size})")
    if "transfer-encoding" in headers and "content-length" in headers:
        # two framings: which one the server meant is a guess (response splitting)
        raise refused("both Content-Length and Transfer-Encoding")


def coding_of(headers: httpx.Headers) -> str:
    """The one content coding of a body ("identity" when none); stacked or unknown refused."""
    codings = [
        c.strip().lower()
        for c in headers.get_list("content-encoding", split_commas=True)
        if c.strip() and c.strip().lower() != "identity"
    ]
    if not codings:
        return "identity"
    if len(codings) > 1:
        raise refused(f"stacked content codings ({', '.join(codings)})")
    if codings[0] not in _CODINGS:
        raise refused(f"content coding {codings[0]!r}, which the client does not accept")
    return codings[0]


class CappedBody:
    """Collects one body, decoding at most one gzip/deflate layer, refusing it past ``cap``
    bytes (raw or decoded)."""

    def __init__(self, coding: str, cap: int) -> None:
        self.coding = coding
        self.cap = cap
        self.size = 0  # decoded bytes kept
        self.raw = 0  # bytes received
        self._parts: list[bytes] = []
        self._zlib = zlib.decompressobj(_CODINGS[coding]) if coding != "identity" else None

    def feed(self, data: bytes) -> None:
        if not data:
            return
        first = self.raw == 0
        self.raw += len(data)
        if self.raw > self.cap:
            raise refused(f"a body larger than {self.cap} bytes")
        if self._zlib is None:
            self._keep(data)
            return
        try:
            self._inflate(data)
        except zlib.error as exc:
            if not (first and self.coding == "deflate" and self.size == 0):
                raise refused(f"a {self.coding} body that cannot be decoded ({exc})") from None
            # "deflate" sent as a bare deflate stream, without zlib's wrapper
            self._zlib = zlib.decompressobj(_RAW_DEFLATE)
            try:
                self._inflate(data)
            except zlib.error as exc2:
                raise refused(f"a deflate body that cannot be decoded ({exc2})") from None

    def _inflate(self, data: bytes) -> None:
        assert self._zlib is not None
        # Never more than one byte past what is still allowed: a bomb stops here. Any
        # less output means zlib took all of ``data`` (nothing is left unconsumed); what
        # follows the end of the stream, in this piece or a later one, is unused_data.
        self._keep(self._zlib.decompress(data, self.cap - self.size + 1))
        if self._zlib.unused_data:
            raise refused(f"data after the end of the {self.coding} body")

    def _keep(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise refused(f"a body larger than {self.cap} bytes once decoded")
        if chunk:
            self._parts.append(chunk)

    def finish(self) -> bytes:
        if self._zlib is not None and self.raw and not self._zlib.eof:
            raise refused(f"a {self.coding} body cut short")
        return b"".join(self._parts)


async def read_capped(response: httpx.Response, cap: int) -> httpx.Response:
    """``response`` (streamed, not yet read) read whole under the limits: a new response
    with the decoded body, without the headers that described the encoded one."""
    check_head(response.headers)
    if response.is_stream_consumed:  # an in-process transport (tests) handed it over read
        if len(response.content) > cap:
            raise refused(f"a body larger than {cap} bytes once decoded")
        return response
    body = CappedBody(coding_of(response.headers), cap)
    async for chunk in response.aiter_raw():
        body.feed(chunk)
    content = body.finish()
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _FRAMING]
    return httpx.Response(
        response.status_code, headers=headers, content=content, request=response.request
    )
