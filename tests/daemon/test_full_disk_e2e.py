"""Issue 22 item 3: SQLite on a full disk (a small tmpfs; CI runs as root — skips, saying why,
where mounting is refused).

The disk fills while the daemon is sending a batch, so the batch's outcomes cannot be
recorded. Meanwhile: ``status`` answers with ``store_state`` ``full``, control calls answer
``unavailable`` naming the full disk, no new work is claimed, and the log says so once.
When space returns (no restart): the outcomes are recorded (nothing left ``sending``, each
message sent exactly once), the WAL is checkpointed back to a small size, and the log says
so once. And ``kuloo-daemon run`` on a full disk exits with one line naming the problem.
"""

from __future__ import annotations

import email
import email.policy
import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from kuloo_daemon.control.client import ControlError

ROOT = Path(__file__).resolve().parents[2]
USERS = 30


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip() or r.returncode
        pytest.skip(f"cannot mount a tmpfs for a full disk: {why}")


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to make room)."""
    filler = folder / "filler"
    block = b"\0" * 65536
    with open(filler, "ab", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with open(filler, "ab", buffering=0) as f:  # the last few bytes too
        for _ in range(65536):
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return filler


@pytest.fixture
def tmpfs(short_tmp):
    mounted: list[Path] = []

    def make(path: Path, size: str = "16m") -> Path:
        mount_tmpfs(path, size)
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class Sink:
    def __init__(self) -> None:
        self.messages: list = []
        self.on_data = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        if self.on_data is not None:
            self.on_data(len(self.messages))
        return "250 OK"


@pytest.fixture
def sink():
    s = Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        s.port = probe.getsockname()[1]
    controller = Controller(s, hostname="127.0.0.1", port=s.port)
    controller.start()
    yield s
    controller.stop()


def config(root: str, smtp_port: int) -> str:
    creds = Path(root) / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text("full-disk-signing-key-0123456789abcdef\n")
    shutil.copytree(ROOT / "config" / "articles", Path(root) / "articles" / "sample")
    return (
        f'[credentials]\ndirectory = "{creds}"\n'
        f'[articles]\nroot = "{root}/articles"\n'
        "[delivery]\nmessages_per_second = 20\nbatch_size = 50\n"
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\ntimeout_seconds = 5\n'
        f'[links]\nlisten = "127.0.0.1:0"\npublic_url = "https://links.kuloo.test"\n'
    )


def test_a_full_disk_is_a_state_and_the_outcomes_are_recorded_when_space_returns(
    daemon_factory, short_tmp, sink, tmpfs
):
    """Planted bugs: delivery's ``_record_when_back`` not registered (the batch stays
    ``sending`` until a restart); the full-disk gate in ``Store.run`` deleted (every job
    fails on each tick: the log grows); the WAL checkpoint left out (the WAL stays large)."""
    d = daemon_factory(config(short_tmp, sink.port))
    state = tmpfs(Path(short_tmp) / "state")
    d.start()
    d.wait_for("READY=1")
    with d.client() as c:
        channel = c.call(
            "channels.create",
            {
                "name": "Gardens",
                "sender": "News <news@gardens.test>",
                "postal_address": "1 Allotment Road",
                "sequential_tags": ["welcome", "onboarding"],
            },
        )["id"]
        assert c.call("articles.import", {"channel": channel, "path": "sample"})["imported"] == 5
    filled: list[Path] = []
    sink.on_data = lambda n: filled.append(fill(state)) if n == 5 and not filled else None
    with d.client() as c:
        for i in range(USERS):
            c.call(
                "users.add",
                {
                    "channel": channel,
                    "email": f"r{i}@example.net",
                    "promo_tags": ["welcome"],
                    "frequency": "disabled",
                },
            )
    deadline = time.monotonic() + 30
    while not filled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert filled, "the batch never reached the fifth message"
    # The batch goes on sending (the transport does not need the disk), then cannot record.
    deadline = time.monotonic() + 30
    status: dict = {}
    while time.monotonic() < deadline:
        with d.client() as c:
            status = c.call("status")
        if status["store_state"]["state"] == "full":
            break
        time.sleep(0.1)
    assert status["store_state"]["state"] == "full", status
    assert status["store_state"]["message"] == "the disk under the database is full"
    with d.client() as c, pytest.raises(ControlError) as refused:
        c.call("users.add", {"channel": channel, "email": "late@example.net"})
    assert (
        refused.value.code == "unavailable"
        and "disk under the database is full" in refused.value.message
    )
    lines_early = len(d.log().splitlines())
    sent_during = len(sink.messages)
    time.sleep(4)
    lines_late = len(d.log().splitlines())
    assert lines_late - lines_early <= 8, "\n".join(d.log().splitlines()[-30:])
    assert len(sink.messages) == sent_during  # no new work claimed while the disk is full
    # Space returns: no restart.
    filled[0].unlink()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with d.client() as c:
                status = c.call("status")
                entries = c.call("outbox.list", {"channel": channel, "limit": 500})["messages"]
        except ControlError:
            entries = []
        if (
            status["store_state"]["state"] == "ok"
            and entries
            and all(e["state"] not in ("sending", "queued") for e in entries)
        ):
            break
        time.sleep(0.2)
    states = sorted({e["state"] for e in entries})
    assert status["store_state"]["state"] == "ok", status
    assert states == ["sent"], [(e["email"], e["state"]) for e in entries]
    to = [str(m["To"]) for m in sink.messages]
    assert sorted(to) == sorted(f"r{i}@example.net" for i in range(USERS))  # each once
    wal = state / "kuloo.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size < 1 << 20, wal.stat().st_size
    log = d.log()
    assert log.count("the disk under the database is full: waiting for room") == 1
    assert log.count("the database answers again") == 1
    assert d.stop() == 0


def test_the_daemon_on_a_full_disk_exits_with_one_line(short_tmp, tmpfs):
    """Planted bug: ``cli._disk_full`` deleted (a traceback of some 40 lines)."""
    state = tmpfs(Path(short_tmp) / "state", "2m")
    fill(state)
    cfg = Path(short_tmp) / "kuloo.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{state}"\n[control]\nsocket = "{short_tmp}/c.sock"\n'
        '[links]\nlisten = "127.0.0.1:0"\npublic_url = "https://links.kuloo.test"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1, r.stderr[-2000:]
    assert len(err) == 1 and "full" in err[0], r.stderr[-2000:]
