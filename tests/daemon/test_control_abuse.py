"""The daemon (a real subprocess) against clients that vanish and input that is out of bounds.

Each case ends the same way: the daemon is alive, other clients are served, nothing bad
was stored, and the log has no error for a client that merely went away.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

from sellsim.seeds import DEMO_TOKEN

MAX = 65536  # the daemon's default control.max_line_bytes


def raw(daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.socket_path)  # blocking: waits while the listen backlog is full
    s.settimeout(10)
    return s


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


HELLO = line({"type": "request", "id": 0, "method": "hello", "params": {"version": 1}})


def read_line(f) -> dict:
    data = f.readline()
    assert data.endswith(b"\n"), data
    return json.loads(data)


def errors_in(log: str) -> list[str]:
    return [entry for entry in log.splitlines() if '"level": "error"' in entry or "Traceback" in entry]


def alive_and_serving(daemon) -> dict:
    assert daemon.proc.poll() is None, daemon.log()
    with daemon.client() as c:
        return c.call("status")


def wait_for_connections(daemon, n: int) -> dict:
    """Status once the daemon has noticed every other client is gone (it answers this one)."""
    deadline = time.monotonic() + 15
    with daemon.client() as c:
        while True:
            status = c.call("status")
            if status["connections"] == n or time.monotonic() > deadline:
                return status
            time.sleep(0.05)


def test_clients_vanishing_at_every_point_of_a_conversation_leave_the_daemon_serving(daemon):
    with daemon.client() as c:
        doc = c.call("channels.create", {"name": "Acme", "postal_address": "x" * 900})
    big = line({"type": "request", "id": 1, "method": "channels.list"})
    for _ in range(20):
        # only hello, then close
        s = raw(daemon)
        s.sendall(HELLO)
        s.close()
        # one request, then close without reading the reply
        s = raw(daemon)
        s.sendall(HELLO + big)
        s.close()
        # connect and close at once; half a line and close
        raw(daemon).close()
        s = raw(daemon)
        s.sendall(HELLO + big[:10])
        s.close()
    # a subscriber that never reads and closes while events are queued for it
    watcher = raw(daemon)
    watcher.sendall(HELLO + line({"type": "request", "id": 1, "method": "subscribe"}))
    with daemon.client() as admin:
        for i in range(60):
            admin.call("channels.update", {"id": doc["id"], "postal_address": f"{i}" + "y" * 900})
    watcher.close()
    status = wait_for_connections(daemon, 1)
    assert status["connections"] == 1 and status["channels"] == 1
    assert alive_and_serving(daemon)["pid"] == daemon.proc.pid
    assert errors_in(daemon.log()) == []


def test_a_client_gone_during_a_slow_channels_verify(daemon_factory, sellsim):
    d = daemon_factory(sell=f'base_url = "{sellsim.base_url}"\nmax_attempts = 1\nverify_timeout_seconds = 20\n'
                       "timeout_seconds = 10\n").start()
    d.wait_for("READY=1")
    with d.client() as c:
        doc = c.call("channels.create", {"name": "Acme", "api_token": DEMO_TOKEN})
    before = doc["connection"]["checked_at"]
    assert doc["connection"]["status"] == "verified" and before
    sellsim.set_faults([{"kind": "slow", "path": "/v2/*", "delay": 1.5, "count": 1}])
    s = raw(d)
    s.sendall(HELLO + line({"type": "request", "id": 7, "method": "channels.verify", "params": {"id": doc["id"]}}))
    f = s.makefile("rb")
    assert read_line(f)["id"] == 0
    time.sleep(0.5)  # the check now waits on Sell; the client gives up (Ctrl-C on kuloo-ctl)
    f.close()
    s.close()
    # the check finishes after the client left: its reply finds nobody, the result is kept
    deadline = time.monotonic() + 30
    with d.client() as c:
        while (got := c.call("channels.get", {"id": doc["id"]}))["connection"]["checked_at"] == before:
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert got["connection"]["status"] == "verified"
    assert [r["fired"] for r in sellsim.faults()] == [1]
    assert wait_for_connections(d, 1)["connections"] == 1
    assert d.proc.poll() is None
    assert errors_in(d.log()) == []
    assert DEMO_TOKEN not in d.log()


def _padded_status(size: int) -> bytes:
    core = b'{"type":"request","id":5,"method":"status"}'
    return core[:-1] + b" " * (size - len(core)) + b"}"


def test_a_line_of_exactly_max_line_bytes_is_answered_and_one_byte_more_is_line_too_long(daemon):
    s = raw(daemon)
    f = s.makefile("rb")
    s.sendall(HELLO)
    read_line(f)
    exact, over = _padded_status(MAX), _padded_status(MAX + 1)
    assert len(exact) == MAX
    # sent in pieces so the limit is met both while buffering and at the newline
    for data in (exact[:40_000], exact[40_000:] + b"\n", over[:MAX], over[MAX:] + b"\n", exact + b"\n"):
        s.sendall(data)
    first, second, third = read_line(f), read_line(f), read_line(f)
    assert first["type"] == "reply" and first["id"] == 5 and first["result"]["pid"] == daemon.proc.pid
    assert second["type"] == "error" and second["error"]["code"] == "line_too_long" and second["id"] is None
    assert f"line of {MAX + 1} bytes" in second["error"]["message"]
    assert third["type"] == "reply" and third["id"] == 5
    s.close()


# Every bad input tried against the daemon, and the answer it gets (the report's table).
# (what, line sent after hello, expected code, expected id)
DEEP = b'{"type":"request","id":1,"method":"status","params":{"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
BAD_INPUTS = [
    ("not JSON", b"{not json", "parse_error", None),
    ("invalid UTF-8", b"\xff\xfe{}", "parse_error", None),
    ("JSON nested 30,000 deep", DEEP, "parse_error", None),
    ("JSON nested 33 deep", b'{"id":1,"method":"status","params":{"x":' + b"[" * 31 + b"]" * 31 + b"}}", "parse_error", None),
    ("NaN in params", b'{"id":1,"method":"status","params":{"x":NaN}}', "parse_error", None),
    ("1e400 (overflows to infinity)", b'{"id":1,"method":"status","params":{"x":1e400}}', "invalid_params", 1),
    ("line over max_line_bytes", b"x" * (MAX + 1), "line_too_long", None),
    ("a JSON array", b"[1,2,3]", "invalid_request", None),
    ("no id", b'{"method":"status"}', "invalid_request", None),
    ("id true", b'{"id":true,"method":"status"}', "invalid_request", None),
    ("id 2^63", b'{"id":9223372036854775808,"method":"status"}', "invalid_request", None),
    ("id a 101-char string", line({"id": "i" * 101, "method": "status"}).rstrip(), "invalid_request", None),
    ("lone surrogate in id", rb'{"id":"\ud800","method":"status"}', "invalid_request", None),
    ("lone surrogate in method", rb'{"id":1,"method":"status\ud800"}', "invalid_request", 1),
    ("lone surrogate in an unknown field", rb'{"id":1,"method":"status","x":"\udfff"}', "invalid_request", 1),
    ("type reply", b'{"id":1,"type":"reply","method":"status"}', "invalid_request", 1),
    ("unknown method", b'{"id":1,"method":"channels.delete"}', "unknown_method", 1),
    ("params a list", b'{"id":1,"method":"status","params":[1]}', "invalid_params", 1),
    ("channels.get id 2^63", b'{"id":1,"method":"channels.get","params":{"id":9223372036854775808}}', "invalid_params", 1),
    ("channels.get id -2^63-1", b'{"id":1,"method":"channels.get","params":{"id":-9223372036854775809}}', "invalid_params", 1),
    ("channels.get id 2^63-1", b'{"id":1,"method":"channels.get","params":{"id":9223372036854775807}}', "not_found", 1),
    ("channels.get id 0", b'{"id":1,"method":"channels.get","params":{"id":0}}', "invalid_params", 1),
    ("channels.get name of 201 chars", line({"id": 1, "method": "channels.get", "params": {"name": "n" * 201}}).rstrip(),
     "invalid_params", 1),
    ("channels.get name of 200 chars", line({"id": 1, "method": "channels.get", "params": {"name": "n" * 200}}).rstrip(),
     "not_found", 1),
    ("channels.create tag a lone surrogate",
     rb'{"id":1,"method":"channels.create","params":{"name":"S","sequential_tags":["\ud800"]}}', "invalid_params", 1),
    ("channels.create name with a lone surrogate", rb'{"id":1,"method":"channels.create","params":{"name":"a\udbff"}}',
     "invalid_params", 1),
    ("channels.create surrogate in a key", rb'{"id":1,"method":"channels.create","params":{"name":"k","\ud800":1}}',
     "invalid_params", 1),
    ("channels.create name of 201 chars", line({"id": 1, "method": "channels.create", "params": {"name": "n" * 201}}).rstrip(),
     "invalid_params", 1),
    ("channels.update id 2^64", b'{"id":1,"method":"channels.update","params":{"id":18446744073709551616,"plan":"pro"}}',
     "invalid_params", 1),
    ("channels.update unknown plan", b'{"id":1,"method":"channels.update","params":{"id":1,"plan":"gold"}}', "invalid_params", 1),
    ("channels.verify id 2^63", b'{"id":1,"method":"channels.verify","params":{"id":9223372036854775808}}', "invalid_params", 1),
    ("hello version 2^64", b'{"id":1,"method":"hello","params":{"version":18446744073709551616}}', "invalid_params", 1),
    ("hello version 99", b'{"id":1,"method":"hello","params":{"version":99}}', "unsupported_version", 1),
    ("hello version \"1\"", b'{"id":1,"method":"hello","params":{"version":"1"}}', "invalid_params", 1),
]


def test_every_bad_input_gets_its_error_and_nothing_is_stored(daemon):
    s = raw(daemon)
    f = s.makefile("rb")
    s.sendall(HELLO)
    read_line(f)
    for what, bad, code, rid in BAD_INPUTS:
        s.sendall(bad + b"\n")
        reply = read_line(f)
        assert reply["type"] == "error", (what, reply)
        assert (reply["error"]["code"], reply["id"]) == (code, rid), (what, reply)
        assert len(reply["error"]["message"]) < 300, what
    s.sendall(line({"type": "request", "id": 2, "method": "channels.list"}))
    assert read_line(f)["result"] == {"channels": []}
    s.close()
    assert errors_in(daemon.log()) == []
    # and after a restart the store still reads: nothing poisoned was committed
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    daemon.start()
    daemon.wait_for("READY=1")
    with daemon.client() as c:
        assert c.call("channels.list") == {"channels": []}


@pytest.mark.parametrize("hello_first", [True, False])
def test_a_client_that_floods_without_newlines_is_bounded(daemon, hello_first):
    """64 KiB and more without a newline: dropped as it comes, one error, the connection stays."""
    s = raw(daemon)
    f = s.makefile("rb")
    if hello_first:
        s.sendall(HELLO)
        read_line(f)
    chunk = b"z" * 65536
    sender = threading.Thread(target=lambda: [s.sendall(chunk) for _ in range(64)] + [s.sendall(b"\n" + HELLO)])
    sender.start()
    reply = read_line(f)
    assert reply["error"]["code"] == "line_too_long" and f"line of {64 * 65536} bytes" in reply["error"]["message"]
    assert read_line(f)["result"]["version"] == 1
    sender.join()
    f.close()  # the file holds the socket open too
    s.close()
    assert wait_for_connections(daemon, 1)["connections"] == 1
