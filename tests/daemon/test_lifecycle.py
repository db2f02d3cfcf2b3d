"""The daemon as systemd runs it: READY, STATUS, SIGHUP reload, SIGTERM drain, activation."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kuloo_daemon.control.client import ControlClient


def test_ready_hello_status_and_clean_stop(daemon):
    with daemon.client() as c:
        assert c.server["version"] == 1
        assert "channels.update" in c.server["methods"]
        st = c.call("status")
    assert st["pid"] == daemon.proc.pid
    assert st["channels"] == 0
    assert st["store"].endswith("kuloo.sqlite3") and os.path.exists(st["store"])
    assert st["uptime_seconds"] >= 0
    assert oct(os.stat(daemon.socket_path).st_mode & 0o777) == "0o660"

    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    daemon.wait_for("STOPPING=1")
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - started < 10
    assert not os.path.exists(daemon.socket_path)


def test_sighup_reloads_the_configuration(daemon):
    text = daemon.config_path.read_text().replace(
        "shutdown_grace_seconds = 3", "shutdown_grace_seconds = 7"
    )
    daemon.config_path.write_text(text)
    daemon.signal(signal.SIGHUP)
    reloading = daemon.wait_for("RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading
    daemon.wait_for("READY=1")
    assert '"configuration reloaded"' in daemon.log()
    assert "daemon.shutdown_grace_seconds" in daemon.log()
    # still serving after the reload
    with daemon.client() as c:
        assert c.call("status")["stopping"] is False


def test_sighup_with_a_broken_file_keeps_running(daemon):
    daemon.config_path.write_text("this is [ not toml")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    assert "reload failed" in daemon.log()
    with daemon.client() as c:
        assert c.call("status")["channels"] == 0


def test_sigterm_drains_an_idle_client_and_a_second_signal_is_harmless(daemon):
    idle = daemon.client()  # connected but silent: must not hold the daemon up
    daemon.signal(signal.SIGTERM)
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0, daemon.log()
    assert idle.sock.recv(10) == b""  # the daemon closed it
    idle.close()


def test_socket_activation(daemon_factory, short_tmp):
    d = daemon_factory(sub="act")
    path = os.path.join(d.root, "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    fd = listener.fileno()
    # What systemd does before exec: the socket at fd 3, LISTEN_FDS=1, LISTEN_PID=<child pid>.
    child = (
        "import os,sys;os.dup2(int(sys.argv[1]),3);os.close(int(sys.argv[1]));"
        "os.environ['LISTEN_FDS']='1';os.environ['LISTEN_PID']=str(os.getpid());"
        "from kuloo_daemon.cli import main;sys.exit(main(sys.argv[2:]))"
    )
    d.start(
        [sys.executable, "-c", child, str(fd), "run", "--config", str(d.config_path)],
        pass_fds=(fd,),
    )
    d.wait_for("READY=1")
    listener.close()  # only the daemon holds it now
    with ControlClient(path, timeout=10) as c:
        assert c.call("status")["pid"] == d.proc.pid
    assert not os.path.exists(d.socket_path), "must not bind its own socket under activation"
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0


def test_refuses_to_steal_a_live_socket(daemon):
    # another state folder (the same one is refused earlier, by its lock), the same socket
    other = daemon.root / "other.toml"
    other.write_text(
        daemon.config_path.read_text().replace(
            str(daemon.root / "state"), str(daemon.root / "state2")
        )
    )
    second = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(other)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "already listening" in second.stderr
    with daemon.client() as c:  # the first one is untouched
        assert c.call("status")["pid"] == daemon.proc.pid


def test_watchdog_is_fed_while_the_scheduler_ticks(daemon_factory):
    d = daemon_factory(env={"WATCHDOG_USEC": "400000"})
    d.start()
    d.wait_for("READY=1")
    for _ in range(3):
        d.wait_for("WATCHDOG=1", timeout=5)


@pytest.mark.e2e
@pytest.mark.parametrize("bad", ['[daemon]\nshutdown_grace_seconds = "soon"\n'])
def test_run_with_a_bad_config_exits_nonzero(short_tmp, bad):
    path = os.path.join(short_tmp, "bad.toml")
    with open(path, "w") as f:
        f.write(bad)
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", path],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "daemon.shutdown_grace_seconds" in r.stderr


@pytest.mark.parametrize("round_", range(5))
def test_a_burst_of_signals_still_exits_cleanly(daemon, round_):
    """Signals still queued when the receiver closes must not kill the process mid-cleanup."""
    for _ in range(4):
        daemon.signal(signal.SIGTERM)
    daemon.signal(signal.SIGINT)
    assert daemon.proc.wait(10) == 0, daemon.log()


def test_control_socket_group(daemon_factory):
    import grp

    d = daemon_factory(sub="g")
    # the fixture's config already has a [control] table: add the key to it
    d.config_path.write_text(
        d.config_path.read_text().replace(
            "[control]\n", '[control]\ngroup = "no-such-group-kuloo"\n'
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "no group named 'no-such-group-kuloo'" in r.stderr
    # Not our own group when we may use another: a new socket gets our group anyway.
    own = os.getgid()
    gids = [g.gr_gid for g in grp.getgrall()] if os.geteuid() == 0 else os.getgroups()
    group = grp.getgrgid(next((g for g in gids if g != own), own))
    d.config_path.write_text(
        d.config_path.read_text().replace("no-such-group-kuloo", group.gr_name)
    )
    d.start()
    d.wait_for("READY=1")
    assert os.stat(d.socket_path).st_gid == group.gr_gid
