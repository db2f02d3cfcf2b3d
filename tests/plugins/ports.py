"""Loopback ports for test servers, safe when several pytest-xdist workers pick at once.

A server that can bind port 0 itself should (nothing can race it). For servers that must be
given a number (aiosmtpd's ``Controller``, PostgreSQL's ``-p``), ``start_on_free_port`` picks a
free port and starts the server on it, picking again when another process took the port in
between (``EADDRINUSE``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = 20


def free_port() -> int:
    """A port that was free a moment ago: only for a server started through
    ``start_on_free_port``, or for a port nobody should answer on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (
        exc.errno == errno.EADDRINUSE or "address already in use" in str(exc).lower()
    )


def start_on_free_port(start: Callable[[int], T], attempts: int = ATTEMPTS) -> tuple[T, int]:
    """``start(port)`` on a free port: its result and the port. When ``start`` raises
    ``OSError`` ``EADDRINUSE`` (another process took the port meanwhile), another port is
    tried, ``attempts`` times in all."""
    for attempt in range(attempts):
        port = free_port()
        try:
            return start(port), port
        except OSError as exc:
            if not address_in_use(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def smtp_controller(handler: object, **options: object) -> tuple[object, int]:
    """A started aiosmtpd ``Controller`` for ``handler`` (and ``options``) on a free loopback
    port, and the port."""
    from aiosmtpd.controller import Controller

    def start(port: int) -> Controller:
        controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
        controller.start()
        return controller

    return start_on_free_port(start)
