"""sd_notify against a real datagram socket; LISTEN_FDS parsing; WATCHDOG_USEC."""

import os
import socket

from kuloo_daemon import systemd


def test_notifier_sends_datagrams(short_tmp):
    path = os.path.join(short_tmp, "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    n = systemd.Notifier(path)
    assert n.enabled
    assert n.ready("up")
    assert server.recv(1024) == b"READY=1\nSTATUS=up"
    n.stopping()
    assert server.recv(1024) == b"STOPPING=1"
    n.reloading()
    assert server.recv(1024).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    n.watchdog()
    assert server.recv(1024) == b"WATCHDOG=1"
    server.close()
    assert n.status("nobody listens") is False  # never raises
    n.close()


def test_notifier_is_silent_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = systemd.Notifier()
    assert not n.enabled and n.ready() is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert systemd.watchdog_interval() is None


def test_listen_fds_for_another_pid_are_ignored(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_sockets() == []
