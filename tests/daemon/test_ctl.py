"""kuloo-ctl as an admin uses it."""

import json
import subprocess
import sys


def ctl(daemon, *args):
    return subprocess.run([sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", daemon.socket_path, *args],
                          capture_output=True, text=True, timeout=30)


def test_ctl_calls_methods_and_prints_json(daemon):
    r = ctl(daemon, "channels.create", '{"name": "from ctl"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "from ctl"
    r = ctl(daemon, "status")
    assert json.loads(r.stdout)["channels"] == 1


def test_ctl_errors_exit_nonzero_with_the_message(daemon):
    r = ctl(daemon, "channels.get", '{"id": 42}')
    assert r.returncode == 1 and "no channel with id 42" in r.stderr and r.stdout == ""
    r = ctl(daemon, "channels.get", "{oops")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = ctl(daemon, "nope")
    assert r.returncode == 1 and "unknown method" in r.stderr


def test_ctl_without_a_daemon(short_tmp):
    r = subprocess.run([sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", f"{short_tmp}/none.sock", "status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot reach the daemon" in r.stderr
