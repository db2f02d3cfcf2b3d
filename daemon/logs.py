"""Logging, configured in one place.

structlog renders JSON lines when stdout is not a terminal (journald) and a readable
console in a terminal. The stdlib loggers of our libraries (httpx, tortoise, hypercorn)
go through the same processors. Secrets are scrubbed by ``redact``, a processor, never
by care: ``Secret`` values are masked, values under secret-sounding keys are masked,
and anything token-shaped (a long unbroken run of token characters, or ``Bearer …``)
is masked wherever it appears in a string.

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

from .secrets import Secret, mask

SECRET_KEYS = re.compile(r"(token|password|secret|authorization|api_key|signing_key|credential)", re.I)
# 32+ characters of token alphabet with at least one digit: Sell tokens are 64 hex-ish chars.
TOKEN_SHAPED = re.compile(r"(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])")
BEARER = re.compile(r"(Bearer\s+)\S+", re.I)


def _scrub(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.masked
    if isinstance(value, str):
        value = BEARER.sub(lambda m: m.group(1) + "****", value)
        return TOKEN_SHAPED.sub(lambda m: mask(m.group(0)), value)
    if isinstance(value, dict):
        return {k: (_mask_any(v) if isinstance(k, str) and SECRET_KEYS.search(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return _scrub(str(value))
    return value


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
    tail: list[Any] = [structlog.processors.format_exc_info, redact_rendered] if use_json else [redact_rendered]
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
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
    for name in ("httpx", "httpcore", "tortoise", "aiosqlite", "hypercorn.access", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
