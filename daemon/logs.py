"""Logging, configured in one place.

structlog renders JSON lines when stdout is not a terminal (journald) and a readable
console in a terminal. The stdlib loggers of our libraries (httpx, tortoise, hypercorn)
go through the same processors. Secrets are scrubbed by ``redact``, a processor, never
by care: ``Secret`` values are masked, values under secret-sounding keys are masked,
every secret the process knows (``secrets.scrub_known``: every ``Secret`` created, every
token in the store) is masked by value whatever its shape, and anything token-shaped (a
long unbroken run of token characters, or ``Bearer …``) is masked wherever it appears.

Tracebacks are rendered without local variables (a frame may hold a revealed token), and
the final rendered line is scrubbed once more, so text added by the renderer itself
(the console's tracebacks) is covered too. tortoise and aiosqlite log every SQL statement
with its parameters at DEBUG: their loggers stay at INFO whatever ``log.level`` says.

One naming scheme and one event style across the daemon (``tests/test_layering.py``
checks both): each module logs through ``structlog.get_logger("kuloo.<unit>")``, where the
unit is its package (``kuloo.crm``, ``kuloo.control``, ``kuloo.sync``…) or top-level module
(``kuloo.app``, ``kuloo.scheduler``…); the event is a short lowercase phrase saying what
happened (``"channel updated"``, ``"sell request retried"``), and every value goes in a
key (``channel_id=…``), never formatted into the phrase.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from .secrets import Secret, mask, scrub_known

SECRET_KEYS = re.compile(
    r"(token|password|secret|authorization|api_key|signing_key|credential)", re.I
)
# 32+ characters of token alphabet with at least one digit: Sell tokens are 64 hex-ish chars.
TOKEN_SHAPED = re.compile(
    r"(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])"
)
# Stops at quotes and backslashes, so that it also applies to a rendered JSON line.
BEARER = re.compile(r"(Bearer\s+)[^\s\"'\\]+", re.I)


def _scrub(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.masked
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {
            k: (_mask_any(v) if isinstance(k, str) and SECRET_KEYS.search(k) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return _scrub(str(value))
    return value


def _scrub_text(text: str) -> str:
    text = scrub_known(text)
    text = BEARER.sub(lambda m: m.group(1) + "****", text)
    return TOKEN_SHAPED.sub(lambda m: mask(m.group(0)), text)


def _mask_any(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Secret):
        return value.masked
    return mask(str(value))


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return _scrub(event_dict)


def redact_rendered(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Scrub again after exception formatting, which adds tracebacks as text."""
    for key in ("exception", "stack"):
        if isinstance(event_dict.get(key), str):
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _scrubbed_renderer(renderer: Any) -> Any:
    """The renderer, followed by a scrub of the text it produced."""

    def render(logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        return _scrub_text(renderer(logger, method, event_dict))

    return render


# Loggers that print SQL parameters (tokens among them) at DEBUG.
SQL_LOGGERS = ("tortoise", "aiosqlite")


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    tail: list[Any] = (
        [structlog.processors.format_exc_info, redact_rendered] if use_json else [redact_rendered]
    )
    renderer = _scrubbed_renderer(
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries are chatty at debug/info; their warnings still come through.
    for name in ("httpx", "httpcore", "hypercorn.access", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    for name in SQL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if level != "debug" else logging.INFO)
    # asyncpg's pool logs a traceback each time it fails to reconnect while PostgreSQL is
    # down; the store logs the outage once, and its end (store/health.py).
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
