"""The free-port helper picks again when another process took the port (xdist workers)."""

from __future__ import annotations

import smtplib
import socket

import pytest

from plugins import ports


def test_a_port_taken_between_pick_and_bind_is_picked_again(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken])
        real = ports.free_port
        monkeypatch.setattr(ports, "free_port", lambda: next(picks, None) or real())
        # aiosmtpd reports a failed bind only after ready_timeout (5 s by default).
        controller, port = ports.smtp_controller(object(), ready_timeout=2)
        try:
            assert port != taken
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                assert client.noop()[0] == 250
        finally:
            controller.stop()


def test_other_errors_are_not_retried():
    calls = []

    def start(port: int) -> None:
        calls.append(port)
        raise PermissionError(13, "not allowed")

    with pytest.raises(PermissionError):
        ports.start_on_free_port(start)
    assert len(calls) == 1


def test_it_gives_up_after_the_attempts():
    calls = []

    def start(port: int) -> None:
        calls.append(port)
        raise OSError(98, "address already in use")

    with pytest.raises(OSError, match="in use"):
        ports.start_on_free_port(start, attempts=3)
    assert len(calls) == 3
