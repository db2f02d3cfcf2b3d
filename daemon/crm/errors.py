"""Typed errors of the Sell client, and the parsing of Sell's error bodies.

Owns the mapping "HTTP status -> error class" and the lenient reading of the error
envelope (``{"errors": [{"error": {...}, "meta": ...}], "meta": {"logref": ...}}``),
including bodies that are not JSON at all (HTML from a proxy, plain-text 429s, empty).
Imports only the standard library.

No message built here ever contains the request's query string or headers, so the token
cannot reach ``str()`` of an error; the client additionally scrubs the token out of any
text that came from the server (``scrub``): a server may echo the Authorization header,
whole or cut short, in an error page, a 422 detail or a request id.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any


class SellError(Exception):
    """Base of every error the Sell client raises.

    ``status`` is the HTTP status (None for network errors), ``logref`` Sell's request id
    (``meta.logref`` or the ``X-Request-Id`` header), ``errors`` a list of
    ``{code, message, details, resource, field}`` dicts (``field`` normalised to a JSON
    pointer without the ``/data`` prefix; the server's form is kept in ``raw_field``).
    """

    kind = "error"
    # True when a create may have been applied although it failed (ambiguous 5xx, timeout
    # or dropped connection after sending, unreadable 2xx): look the record up first.
    maybe_applied = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        logref: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        method: str | None = None,
        path: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.logref = logref
        self.errors = list(errors or [])
        self.method = method
        self.path = path
        self.attempts = attempts

    def __str__(self) -> str:
        parts = [self.message]
        if self.method and self.path:
            parts.append(f"({self.method} {self.path})")
        if self.status is not None:
            parts.append(f"[HTTP {self.status}]")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        summary = summarize_errors(self.errors)
        if summary:
            parts.append(f"- {summary}")
        if self.logref:
            parts.append(f"(logref {self.logref})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    @property
    def code(self) -> str | None:
        return self.errors[0].get("code") if self.errors else None

    @property
    def field(self) -> str | None:
        return self.errors[0].get("field") if self.errors else None

    @property
    def details(self) -> str | None:
        return self.errors[0].get("details") if self.errors else None


class AuthenticationError(SellError):
    """401: the token is missing, malformed, expired or revoked. Never retried."""

    kind = "authentication"


class ForbiddenError(SellError):
    """403: the token may not do this (scope, role or plan, e.g. no Sync API)."""

    kind = "forbidden"


class NotFoundError(SellError):
    """404: no such record (or path)."""

    kind = "not_found"


class ValidationError(SellError):
    """422: Sell refused the record; ``errors`` carries code, field and details."""

    kind = "validation"

    @property
    def fields(self) -> list[str]:
        return [e["field"] for e in self.errors if e.get("field")]


class BadRequestError(SellError):
    """Any other 4xx (400 invalid_param, 406, 409...): a bug on our side, not retried."""

    kind = "bad_request"


class RateLimitedError(SellError):
    """429, still refused after every retry."""

    kind = "rate_limited"


class ServerError(SellError):
    """5xx, still failing after every retry (or not retried because the write may have
    been applied; then ``maybe_applied`` is True)."""

    kind = "server"


class NetworkError(SellError):
    """Timeout or connection failure after every retry (``maybe_applied`` as above)."""

    kind = "network"


class MalformedResponseError(SellError):
    """A success status whose body is not the envelope we expected."""

    kind = "malformed"


STATUS_CLASSES: dict[int, type[SellError]] = {
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    422: ValidationError,
    429: RateLimitedError,
}


def error_class_for(status: int) -> type[SellError]:
    if status in STATUS_CLASSES:
        return STATUS_CLASSES[status]
    if status >= 500:
        return ServerError
    return BadRequestError


_DEFAULT_MESSAGES = {
    400: "Sell rejected the request",
    401: "Sell rejected the API token",
    403: "Sell refused access to this resource",
    404: "not found in Sell",
    422: "Sell refused the record",
    429: "Sell rate limit exceeded",
}


def default_message(status: int) -> str:
    if status in _DEFAULT_MESSAGES:
        return _DEFAULT_MESSAGES[status]
    if status >= 500:
        return "Sell server error"
    return "Sell rejected the request"


def normalize_pointer(field: Any) -> str | None:
    """``/data/custom_fields/Promo`` and ``/custom_fields/Promo`` are the same field."""
    if field is None or field == "":
        return None
    text = str(field)
    if not text.startswith("/"):
        text = "/" + text
    if text == "/data":
        return "/"
    if text.startswith("/data/"):
        text = text[len("/data") :]
    return text


_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


def text_snippet(body: bytes | str, limit: int = 200) -> str:
    """A short, single-line, tag-free excerpt of a non-JSON body (HTML error pages)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    body = re.sub(r"(?is)<(script|style)[^>]*>.*?</\1>", " ", body)
    text = _SPACES.sub(" ", html.unescape(_TAGS.sub(" ", body))).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def parse_error_body(
    body: bytes | str, request_id: str | None = None
) -> tuple[str | None, list[dict[str, Any]], str]:
    """Read an error response body leniently.

    Returns ``(logref, errors, snippet)``: the errors list is empty and ``snippet`` holds a
    short excerpt when the body is not Sell's JSON envelope.
    """
    logref = request_id or None
    raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(raw) if raw.strip() else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return logref, [], text_snippet(raw) if doc is None else text_snippet(json.dumps(doc))
    meta = doc.get("meta")
    if isinstance(meta, dict) and meta.get("logref"):
        logref = str(meta["logref"])
    errors: list[dict[str, Any]] = []
    items = doc.get("errors")
    if isinstance(items, dict):
        items = [items]
    if isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                if item is not None:
                    errors.append(_error_entry({"message": str(item)}))
                continue
            error = item.get("error")
            errors.append(_error_entry(error if isinstance(error, dict) else item))
    elif isinstance(doc.get("error"), dict | str):
        inner = doc["error"] if isinstance(doc["error"], dict) else {"message": doc["error"]}
        errors.append(_error_entry(inner))
    snippet = "" if errors else text_snippet(raw)
    return logref, errors, snippet


def _error_entry(inner: dict[str, Any]) -> dict[str, Any]:
    def s(key: str) -> str | None:
        value = inner.get(key)
        return None if value is None else str(value)

    return {
        "code": s("code"),
        "message": s("message"),
        "details": s("details"),
        "resource": s("resource"),
        "field": normalize_pointer(inner.get("field")),
        "raw_field": s("field"),
    }


def summarize_errors(errors: list[dict[str, Any]], limit: int = 3) -> str:
    parts = []
    for e in errors[:limit]:
        bits = [b for b in (e.get("code"), e.get("field")) if b]
        text = e.get("details") or e.get("message") or ""
        head = " ".join(bits)
        parts.append(f"{head}: {text}" if head and text else head or text)
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(p for p in parts if p)


SCRUB_RUN = 8  # any run of this many characters of the token is masked
_BEARER = re.compile(r"(Bearer\s+)(?!\*\*\*\*)[^\s\"'\\<>,;]+", re.I)


def scrub(text: str, secret: str | None) -> str:
    """Server-provided text with every ``Bearer …`` credential and every run of at least
    ``SCRUB_RUN`` consecutive characters of ``secret`` replaced by ``****``.

    Runs, not only the whole token: an echo truncated to fit an error page, or starting
    in the middle of the header, still carries most of the token."""
    if not text:
        return text
    if secret:
        text = _scrub_runs(text, secret)
    return _BEARER.sub(lambda m: m.group(1) + "****", text)


def _scrub_runs(text: str, secret: str) -> str:
    if len(secret) < SCRUB_RUN:
        return text.replace(secret, "****")
    grams = {secret[i : i + SCRUB_RUN] for i in range(len(secret) - SCRUB_RUN + 1)}
    spans: list[list[int]] = []
    for i in range(len(text) - SCRUB_RUN + 1):
        if text[i : i + SCRUB_RUN] in grams:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + SCRUB_RUN
            else:
                spans.append([i, i + SCRUB_RUN])
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append("****")
        last = end
    out.append(text[last:])
    return "".join(out)
