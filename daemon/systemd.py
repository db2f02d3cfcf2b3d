"""The daemon's side of systemd: sd_notify, socket activation, watchdog interval.

A few dozen lines of stdlib over ``$NOTIFY_SOCKET`` (daemon(7), sd_notify(3)) rather than
a dependency. Every function is a no-op outside systemd, so the daemon runs the same in
a terminal.
"""

from __future__ import annotations

import os
import socket
import time

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify datagrams; silent when ``$NOTIFY_SOCKET`` is unset."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        self._address: str | bytes = ""
        if address:
            if address.startswith("@"):  # abstract namespace
                self._address = "\0" + address[1:]
            else:
                self._address = address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Called from trio code: a full queue (systemd busy) must drop the message,
            # never block the event loop (BlockingIOError is an OSError, see notify).
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            return False  # systemd gone or socket full: never fatal for the daemon
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 for Type=notify-reload.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects, or None when it expects none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def listen_sockets() -> list[socket.socket]:
    """Sockets passed by socket activation (``LISTEN_FDS``/``LISTEN_PID``), once.

    The variables are removed so children do not inherit them, as sd_listen_fds(3) does.
    """
    pid = os.environ.get("LISTEN_PID")
    count = os.environ.get("LISTEN_FDS")
    if not pid or not count or pid != str(os.getpid()):
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
