"""kuloo-ctl as an admin uses it."""

import json
import socket
import subprocess
import sys
import threading

import pytest

from kuloo_daemon.control.client import ControlClient, connect


def ctl(daemon, *args):
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", daemon.socket_path, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


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


@pytest.mark.parametrize(
    "args", [["status"], ["channels.list"], ["users", "list", "--channel", "1"]]
)
def test_output_to_a_reader_that_went_away_is_not_a_daemon_failure(daemon, args):
    """``kuloo-ctl ... | head``: planted bug: stdout's broken pipe is caught as a lost
    connection ("connection to the daemon failed: Broken pipe"), or ends in a traceback."""
    import os

    ctl(daemon, "channels.create", '{"name": "piped"}')
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before kuloo-ctl writes a byte
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "kuloo_daemon.control.ctl",
                "--socket",
                daemon.socket_path,
                *args,
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (0, "")


@pytest.mark.e2e
def test_ctl_without_a_daemon(short_tmp):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kuloo_daemon.control.ctl",
            "--socket",
            f"{short_tmp}/none.sock",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "cannot reach the daemon" in r.stderr


def run_ctl(path, *args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", path, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class StandIn:
    """A Unix-socket server that answers each line it reads with ``answers`` in turn, then hangs up."""

    def __init__(self, path: str, answers: list[bytes], backlog: int = 8) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(backlog)
        self.answers = answers
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as f:
            for answer in self.answers:
                if not f.readline():
                    return
                conn.sendall(answer)
            f.readline()  # the next request arrives, then we hang up on it

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


HELLO_REPLY = b'{"type":"reply","id":0,"result":{"version":1,"methods":["status"]}}\n'


@pytest.mark.parametrize(
    "answers, fragment",
    [
        (
            [b"HTTP/1.1 400 Bad Request\r\n\r\n"],
            "does not answer in the control protocol: not valid JSON",
        ),
        (
            [HELLO_REPLY, b"<html>oops</html>\n"],
            "the daemon's answer is not the control protocol: not valid JSON",
        ),
        (
            [HELLO_REPLY, b'{"type":"reply","id":77,"result":1}\n'],
            "answered a request never sent (id 77)",
        ),
        ([HELLO_REPLY, b"[1,2]\n"], "the daemon's answer is not the control protocol"),
        ([HELLO_REPLY], "connection to the daemon failed: the daemon closed the connection"),
        (
            [b'{"type":"reply","id":0,"result":{"version":5}}\n'],
            "does not answer in the control protocol",
        ),
    ],
)
def test_ctl_says_in_one_line_when_the_answer_is_not_the_protocol(short_tmp, answers, fragment):
    path = f"{short_tmp}/fake.sock"
    server = StandIn(path, answers)
    try:
        r = run_ctl(path, "status")
    finally:
        server.close()
    assert r.returncode == 1 and r.stdout == ""
    assert fragment in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (
        r.stderr
    )


def test_ctl_names_a_path_that_is_not_a_socket(short_tmp):
    path = f"{short_tmp}/regular-file"
    with open(path, "w") as f:
        f.write("not a socket\n")
    r = run_ctl(path, "status")
    assert (
        r.returncode == 1
        and r.stderr == f"kuloo-ctl: cannot reach the daemon at {path}: {path} is not a socket\n"
    )
    r = run_ctl(short_tmp, "status")  # a directory
    assert r.returncode == 1 and f"{short_tmp} is not a socket" in r.stderr


def test_ctl_refuses_params_no_daemon_could_read(daemon):
    r = ctl(daemon, "channels.create", '{"name": "x", "sequential_tags": ["\\ud800"]}')
    assert (
        r.returncode == 2
        and "PARAMS.sequential_tags[0] contains a lone UTF-16 surrogate" in r.stderr
    )
    assert "Traceback" not in r.stderr


def test_connect_waits_while_the_listen_queue_is_full(short_tmp):
    """A full queue makes a connect with a timeout fail at once (EAGAIN): the client retries."""
    path = f"{short_tmp}/busy.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)
    queued = []
    try:
        with pytest.raises(
            TimeoutError
        ):  # nobody accepts: fill the queue until a connect times out
            for _ in range(10):
                queued.append(connect(path, timeout=0.2))
        accepted = []
        accepter = threading.Thread(
            target=lambda: accepted.extend(listener.accept() for _ in range(len(queued) + 1))
        )
        late = []
        waiter = threading.Thread(target=lambda: late.append(connect(path, timeout=10)))
        waiter.start()
        accepter.start()
        waiter.join(15)
        accepter.join(15)
        assert len(late) == 1 and late[0].getpeername() == path
    finally:
        for s in queued + late:
            s.close()
        listener.close()


def test_two_hundred_parallel_clients_are_all_served(daemon):
    results: list = []
    failures: list = []

    def one() -> None:
        try:
            with ControlClient(daemon.socket_path, timeout=60) as c:
                results.append(c.call("status")["pid"])
        except Exception as exc:  # collected, so the assertion shows every kind of failure
            failures.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert results == [daemon.proc.pid] * 200
