"""The daemon (a real subprocess) against clients that vanish and input that is out of bounds.

Each case ends the same way: the daemon is alive, other clients are served, nothing bad
was stored, and the log has no error for a client that merely went away.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
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
    return [
        entry for entry in log.splitlines() if '"level": "error"' in entry or "Traceback" in entry
    ]


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
    with daemon.client() as admin:  # ~250 kB of events: more than the socket buffers hold
        for i in range(250):
            admin.call("channels.update", {"id": doc["id"], "postal_address": f"{i}" + "y" * 990})
    watcher.close()
    status = wait_for_connections(daemon, 1)
    assert status["connections"] == 1 and status["channels"] == 1
    assert alive_and_serving(daemon)["pid"] == daemon.proc.pid
    assert errors_in(daemon.log()) == []


def test_a_client_gone_during_a_slow_channels_verify(daemon_factory, sellsim):
    d = daemon_factory(
        sell=f'base_url = "{sellsim.base_url}"\nmax_attempts = 1\nverify_timeout_seconds = 20\n'
        "timeout_seconds = 10\n"
    ).start()
    d.wait_for("READY=1")
    with d.client() as c:
        doc = c.call("channels.create", {"name": "Acme", "api_token": DEMO_TOKEN})
    before = doc["connection"]["checked_at"]
    assert doc["connection"]["status"] == "verified" and before
    sellsim.set_faults([{"kind": "slow", "path": "/v2/users/self", "delay": 1.5, "count": 1}])
    s = raw(d)
    s.sendall(
        HELLO
        + line(
            {"type": "request", "id": 7, "method": "channels.verify", "params": {"id": doc["id"]}}
        )
    )
    f = s.makefile("rb")
    assert read_line(f)["id"] == 0
    time.sleep(0.5)  # the check now waits on Sell; the client gives up (Ctrl-C on kuloo-ctl)
    f.close()
    s.close()
    # the check finishes after the client left: its reply finds nobody, the result is kept
    deadline = time.monotonic() + 30
    with d.client() as c:
        while (got := c.call("channels.get", {"id": doc["id"]}))["connection"][
            "checked_at"
        ] == before:
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
    for data in (
        exact[:40_000],
        exact[40_000:] + b"\n",
        over[:MAX],
        over[MAX:] + b"\n",
        exact + b"\n",
    ):
        s.sendall(data)
    first, second, third = read_line(f), read_line(f), read_line(f)
    assert (
        first["type"] == "reply" and first["id"] == 5 and first["result"]["pid"] == daemon.proc.pid
    )
    assert (
        second["type"] == "error"
        and second["error"]["code"] == "line_too_long"
        and second["id"] is None
    )
    assert f"line of {MAX + 1} bytes" in second["error"]["message"]
    assert third["type"] == "reply" and third["id"] == 5
    s.close()


# Every bad input tried against the daemon, and the answer it gets (the report's table).
# (what, line sent after hello, expected code, expected id)
DEEP = (
    b'{"type":"request","id":1,"method":"status","params":{"x":'
    + b"[" * 30_000
    + b"]" * 30_000
    + b"}}"
)
BAD_INPUTS = [
    ("not JSON", b"{not json", "parse_error", None),
    ("invalid UTF-8", b"\xff\xfe{}", "parse_error", None),
    ("JSON nested 30,000 deep", DEEP, "parse_error", None),
    (
        "JSON nested 33 deep",
        b'{"id":1,"method":"status","params":{"x":' + b"[" * 31 + b"]" * 31 + b"}}",
        "parse_error",
        None,
    ),
    ("NaN in params", b'{"id":1,"method":"status","params":{"x":NaN}}', "parse_error", None),
    (
        "1e400 (overflows to infinity)",
        b'{"id":1,"method":"status","params":{"x":1e400}}',
        "invalid_params",
        1,
    ),
    ("line over max_line_bytes", b"x" * (MAX + 1), "line_too_long", None),
    ("a JSON array", b"[1,2,3]", "invalid_request", None),
    ("no id", b'{"method":"status"}', "invalid_request", None),
    ("id true", b'{"id":true,"method":"status"}', "invalid_request", None),
    ("id 2^63", b'{"id":9223372036854775808,"method":"status"}', "invalid_request", None),
    (
        "id a 101-char string",
        line({"id": "i" * 101, "method": "status"}).rstrip(),
        "invalid_request",
        None,
    ),
    ("lone surrogate in id", rb'{"id":"\ud800","method":"status"}', "invalid_request", None),
    ("lone surrogate in method", rb'{"id":1,"method":"status\ud800"}', "invalid_request", 1),
    (
        "lone surrogate in an unknown field",
        rb'{"id":1,"method":"status","x":"\udfff"}',
        "invalid_request",
        1,
    ),
    ("type reply", b'{"id":1,"type":"reply","method":"status"}', "invalid_request", 1),
    ("unknown method", b'{"id":1,"method":"channels.destroy"}', "unknown_method", 1),
    ("params a list", b'{"id":1,"method":"status","params":[1]}', "invalid_params", 1),
    (
        "channels.get id 2^63",
        b'{"id":1,"method":"channels.get","params":{"id":9223372036854775808}}',
        "invalid_params",
        1,
    ),
    (
        "channels.get id -2^63-1",
        b'{"id":1,"method":"channels.get","params":{"id":-9223372036854775809}}',
        "invalid_params",
        1,
    ),
    (
        "channels.get id 2^63-1",
        b'{"id":1,"method":"channels.get","params":{"id":9223372036854775807}}',
        "not_found",
        1,
    ),
    (
        "channels.get id 0",
        b'{"id":1,"method":"channels.get","params":{"id":0}}',
        "invalid_params",
        1,
    ),
    (
        "channels.get name of 201 chars",
        line({"id": 1, "method": "channels.get", "params": {"name": "n" * 201}}).rstrip(),
        "invalid_params",
        1,
    ),
    (
        "channels.get name of 200 chars",
        line({"id": 1, "method": "channels.get", "params": {"name": "n" * 200}}).rstrip(),
        "not_found",
        1,
    ),
    (
        "channels.create tag a lone surrogate",
        rb'{"id":1,"method":"channels.create","params":{"name":"S","sequential_tags":["\ud800"]}}',
        "invalid_params",
        1,
    ),
    (
        "channels.create name with a lone surrogate",
        rb'{"id":1,"method":"channels.create","params":{"name":"a\udbff"}}',
        "invalid_params",
        1,
    ),
    (
        "channels.create surrogate in a key",
        rb'{"id":1,"method":"channels.create","params":{"name":"k","\ud800":1}}',
        "invalid_params",
        1,
    ),
    (
        "channels.create name of 201 chars",
        line({"id": 1, "method": "channels.create", "params": {"name": "n" * 201}}).rstrip(),
        "invalid_params",
        1,
    ),
    (
        "channels.update id 2^64",
        b'{"id":1,"method":"channels.update","params":{"id":18446744073709551616,"plan":"pro"}}',
        "invalid_params",
        1,
    ),
    (
        "channels.update unknown plan",
        b'{"id":1,"method":"channels.update","params":{"id":1,"plan":"gold"}}',
        "invalid_params",
        1,
    ),
    (
        "channels.verify id 2^63",
        b'{"id":1,"method":"channels.verify","params":{"id":9223372036854775808}}',
        "invalid_params",
        1,
    ),
    (
        "hello version 2^64",
        b'{"id":1,"method":"hello","params":{"version":18446744073709551616}}',
        "invalid_params",
        1,
    ),
    (
        "hello version 99",
        b'{"id":1,"method":"hello","params":{"version":99}}',
        "unsupported_version",
        1,
    ),
    (
        'hello version "1"',
        b'{"id":1,"method":"hello","params":{"version":"1"}}',
        "invalid_params",
        1,
    ),
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
    sender = threading.Thread(
        target=lambda: [s.sendall(chunk) for _ in range(64)] + [s.sendall(b"\n" + HELLO)]
    )
    sender.start()
    reply = read_line(f)
    assert (
        reply["error"]["code"] == "line_too_long"
        and f"line of {64 * 65536} bytes" in reply["error"]["message"]
    )
    assert read_line(f)["result"]["version"] == 1
    sender.join()
    f.close()  # the file holds the socket open too
    s.close()
    assert wait_for_connections(daemon, 1)["connections"] == 1


# --- fuzz: many clients writing random prefixes of good and bad traffic ----------------------
SOAK = bool(os.environ.get("KULOO_SOAK"))
FUZZ_CONNECTIONS = 5000 if SOAK else 500
RSS_GROWTH_LIMIT_KB = (
    16 * 1024
)  # the RSS after the fuzz over the RSS after a warm-up (measured: +1 MB at 500)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(row.split()[1]) for row in f if row.startswith("VmRSS:"))


def fuzz_script(rng: random.Random, n: int) -> bytes:
    good = [
        line({"type": "request", "id": rng.randrange(1, 1000), "method": "status"}),
        line({"type": "request", "id": "s", "method": "subscribe"}),
        line({"type": "request", "id": 3, "method": "channels.list"}),
        line(
            {
                "type": "request",
                "id": 4,
                "method": "channels.get",
                "params": {"id": rng.randrange(1, 5)},
            }
        ),
        line(
            {
                "type": "request",
                "id": 5,
                "method": "channels.create",
                "params": {"name": f"fuzz {n}", "plan": "pro"},
            }
        ),
        line(
            {
                "type": "request",
                "id": 6,
                "method": "channels.update",
                "params": {"id": 1, "postal_address": f"{n} " + "p" * rng.randrange(2000)},
            }
        ),
    ]
    bad = [b for _, b, _, _ in BAD_INPUTS if len(b) < 2000] + [
        b'{"id":1,"method":"status"',
        b"\x00\x01\x02",
    ]
    parts = [HELLO] if rng.random() < 0.9 else []
    for _ in range(rng.randrange(8)):
        parts.append(rng.choice(good) if rng.random() < 0.6 else rng.choice(bad) + b"\n")
    if rng.random() < 0.02:
        parts.append(DEEP + b"\n")
    data = b"".join(parts)
    return data[: rng.randrange(len(data) + 1)] if rng.random() < 0.7 else data


def fuzz_one(daemon, seed: int) -> None:
    rng = random.Random(seed)
    data = fuzz_script(rng, seed)
    s = raw(daemon)
    try:
        for start in range(0, len(data), 4096):
            s.sendall(data[start : start + 4096])
            if rng.random() < 0.05:
                return  # gone mid-write
        ending = rng.random()
        if ending < 0.3:
            return  # gone without reading anything
        s.settimeout(0.2)
        want = rng.randrange(1, 4096) if ending < 0.7 else 1 << 20
        got = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            while got < want:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += len(chunk)
    finally:
        s.close()


def test_fuzz_many_clients_closing_at_random_points_while_status_is_always_answered(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "target"})  # channels.update on id 1 publishes events
    for seed in range(50):  # warm-up: imports, caches and allocator pools settle before measuring
        fuzz_one(daemon, 10_000_000 + seed)
    wait_for_connections(daemon, 1)
    before = rss_kb(daemon.proc.pid)

    answers, stop = [], threading.Event()

    def keep_calling_status() -> None:
        with daemon.client() as c:
            while not stop.is_set():
                answers.append(c.call("status")["pid"])

    caller = threading.Thread(target=keep_calling_status)
    caller.start()
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(fuzz_one, daemon, seed) for seed in range(FUZZ_CONNECTIONS)]:
            if future.exception() is not None:
                failures.append(repr(future.exception()))
    stop.set()
    caller.join(60)
    assert not caller.is_alive()
    assert failures == []
    assert answers and answers == [daemon.proc.pid] * len(answers)  # every status call was answered

    status = wait_for_connections(daemon, 1)
    assert daemon.proc.poll() is None
    assert status["connections"] == 1, status
    after = rss_kb(daemon.proc.pid)
    print(
        f"fuzz: {FUZZ_CONNECTIONS} connections, {len(answers)} status answers, "
        f"RSS {before} kB -> {after} kB (+{after - before} kB)"
    )
    assert after - before < RSS_GROWTH_LIMIT_KB
    assert errors_in(daemon.log()) == []


def test_a_lone_surrogate_stored_by_an_older_version_is_answered_not_fatal(daemon):
    """Before the edge checks, channels.create could commit a lone surrogate; every later
    channels.list then killed the daemon. Such a store is still read, with U+FFFD in its place."""
    with daemon.client() as c:
        doc = c.call("channels.create", {"name": "old", "sequential_tags": ["ok"]})
    db = sqlite3.connect(alive_and_serving(daemon)["store"])
    with db:
        db.execute(
            "UPDATE channel SET sequential_tags = ? WHERE id = ?",
            ('["ok", "bad\\ud800"]', doc["id"]),
        )
    db.close()
    with daemon.client() as c:
        assert c.call("channels.list")["channels"][0]["sequential_tags"] == ["ok", "bad\ufffd"]
        assert c.call("channels.get", {"id": doc["id"]})["sequential_tags"] == ["ok", "bad\ufffd"]
    assert errors_in(daemon.log()) == []


def test_ctrl_c_on_kuloo_ctl_during_a_slow_channels_verify(daemon_factory, sellsim):
    d = daemon_factory(
        sell=f'base_url = "{sellsim.base_url}"\nmax_attempts = 1\nverify_timeout_seconds = 20\n'
    ).start()
    d.wait_for("READY=1")
    with d.client() as c:
        doc = c.call("channels.create", {"name": "Acme", "api_token": DEMO_TOKEN})
    # the verify's token check (the channel's scheduled sync also talks to Sell meanwhile)
    sellsim.set_faults([{"kind": "slow", "path": "/v2/users/self", "delay": 6, "count": 1}])
    ctl = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kuloo_daemon.control.ctl",
            "--socket",
            d.socket_path,
            "channels.verify",
            json.dumps({"id": doc["id"]}),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not any(rule["seen"] for rule in sellsim.faults()):  # the check is waiting on Sell now
        assert time.monotonic() < deadline and ctl.poll() is None
        time.sleep(0.05)
    ctl.send_signal(signal.SIGINT)
    out, err = ctl.communicate(timeout=20)
    assert ctl.returncode == 130 and out == "" and err == "kuloo-ctl: interrupted\n"
    assert wait_for_connections(d, 1)["connections"] == 1
    assert d.proc.poll() is None and errors_in(d.log()) == []
