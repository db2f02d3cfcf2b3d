"""`make demo`'s script end to end: every promised piece comes up seeded, and nothing it
started outlives it — whether the TUI is quit, crashes, or the script is told to stop.

A fresh demo takes about 10 s (the first sync of ~60 records at sellsim's real 10 req/s);
one fresh run (module fixture, ``--smoke``) is copied for the other tests, whose runs then
take the "second ``make demo``" path: the state is reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from kuloo_daemon.control.client import ControlClient

pytestmark = pytest.mark.e2e  # every test here runs a subprocess

ROOT = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, str(ROOT / "scripts" / "demo.py")]


def alive(pid: int) -> bool:
    """A process that exists and is no zombie (an orphan's zombie may wait for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_until(condition, timeout: float = 60, what: str = "") -> None:
    """Bounded wait for something the demo does (never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what or condition}")
        time.sleep(0.05)


def sell_get(url: str, path: str) -> object:
    with urllib.request.urlopen(url + path, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def seeded_state():
    """One fresh demo (``--smoke``: set up, print, stop); tests copy its state."""
    path = tempfile.mkdtemp(dir="/tmp", prefix="kd-")
    r = subprocess.run(
        [*DEMO, "--smoke", "--state", path], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "channel #1 'Demo channel': plan pro, token ****0000, connection verified" in r.stdout
    assert "business clock: manual, now 2026-01-05T09:00:00Z" in r.stdout
    assert "Sync stopped: the KulooId field was changed" in r.stdout
    assert not (Path(path) / "demo.pids").exists()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def state(seeded_state, short_tmp):
    dest = Path(short_tmp) / "s"
    shutil.copytree(seeded_state, dest)
    return dest


def read_pids(state: Path) -> dict[str, int]:
    wait_until(lambda: (state / "demo.pids").exists(), what="demo.pids written")
    return json.loads((state / "demo.pids").read_text())


def reap(state: Path) -> None:
    """After a failed test: stop whatever the demo's pid file still names (by pid, nothing broader)."""
    try:
        pids = json.loads((state / "demo.pids").read_text())
    except (OSError, ValueError):
        return
    for pid in pids.values():
        if alive(pid) and str(state) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace"
        ):
            os.kill(pid, signal.SIGKILL)


def assert_all_gone(pids: dict[str, int], state: Path) -> None:
    for name, pid in pids.items():
        wait_until(lambda pid=pid: not alive(pid), timeout=30, what=f"{name} (pid {pid}) stopped")
    for name in ("daemon", "sellsim"):  # own sessions: nothing of theirs is left either
        wait_until(
            lambda name=name: group_empty(pids[name]),
            timeout=30,
            what=f"{name}'s process group empty",
        )
    assert not (state / "demo.pids").exists()


def test_no_tui_brings_up_every_promised_piece_then_stops_everything(state):
    proc = subprocess.Popen(
        [*DEMO, "--no-tui", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "demo: ready\n" in lines or proc.poll() is not None, what="demo ready")
        assert proc.poll() is None, "".join(lines)
        out = "".join(lines)
        pids = read_pids(state)
        assert set(pids) == {"demo", "sellsim", "daemon"} and pids["demo"] == proc.pid
        sell_url = next(x for x in lines if x.startswith("sellsim (")).split(": ", 1)[1].split()[0]

        # sellsim: the demo account, ~50 leads and contacts, one converted lead, the broken KulooId
        account = sell_get(sell_url, "/_sim/accounts")[0]
        assert account["name"] == "Kuloo Demo"
        assert 45 <= account["counts"]["lead"] + account["counts"]["contact"] <= 70, account[
            "counts"
        ]
        world = sell_get(sell_url, "/_sim/state")["accounts"][0]  # the control API: no rate limit
        assert len(world["conversions"]) == 1
        broken = next(
            r for r in world["records"]["lead"] if r["email"] == "ines.quist.28@example.com"
        )
        assert broken["custom_fields"]["KulooId"] == "typed-over-by-a-sell-user"
        assert sum(1 for r in world["records"]["lead"] if r["email"] == "kim.park@example.com") == 2

        with ControlClient(str(state / "control.sock"), timeout=30) as c:
            status = c.call("status")
            assert status["pid"] == pids["daemon"] and status["store"].endswith("kuloo.sqlite3")
            assert status["clock"] == {"mode": "manual", "now": "2026-01-05T09:00:00Z"}
            channel = c.call("channels.get", {"id": 1})
            assert channel["plan"] == "pro" and channel["connection"]["status"] == "verified"
            listing = c.call("users.list", {"channel": 1, "limit": 500})
            assert listing["total"] >= 50
            linked = [u for u in listing["users"] if u["crm"]]
            assert {u["crm"]["kind"] for u in linked} == {"lead", "contact"}
            errors = c.call("sync.errors", {"channel": 1})["errors"]
            kulooid = [e for e in errors if e["email"] == "ines.quist.28@example.com"]
            assert (
                kulooid
                and "Restore it to" in kulooid[0]["error"]
                and kulooid[0]["user"] is not None
            )
            assert any(
                e["email"] == "kim.park@example.com" and e["user"] is None for e in errors
            )  # shared email
            runs = c.call("sync.runs", {"channel": 1})["runs"]
            assert len(runs) >= 2 and all(r["status"] in ("ok", "partial") for r in runs)
            articles = c.call("articles.list", {"channel": 1})["articles"]
            assert len(articles) >= 5
            assert "/maildir" in out and (state / "maildir").is_dir()
        links = status["links"]["url"]
        with urllib.request.urlopen(links + "/healthz", timeout=10) as resp:
            assert resp.status == 200

        # a second demo on the same state refuses to start beside this one, and harms nothing
        r = subprocess.run(
            [*DEMO, "--smoke", "--state", str(state)], capture_output=True, text=True, timeout=60
        )
        assert (
            r.returncode != 0
            and f"a demo is already running on {state} (pid {proc.pid})" in r.stderr
        )
        assert alive(pids["daemon"]) and alive(pids["sellsim"])

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert_all_gone(pids, state)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap(state)


def test_a_killed_demo_leaves_nothing_and_the_next_one_starts_cleanly(state):
    """kill -9 of the script itself: its children get SIGTERM from the kernel (PDEATHSIG);
    the next run meets a stale demo.pids and control socket and still starts, reusing the state."""
    proc = subprocess.Popen(
        [*DEMO, "--no-tui", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        wait_until(lambda: "demo: ready\n" in lines or proc.poll() is not None, what="demo ready")
        pids = read_pids(state)
        proc.kill()
        proc.wait()
        for name in ("sellsim", "daemon"):
            wait_until(lambda name=name: not alive(pids[name]), timeout=30, what=f"{name} stopped")
        assert (state / "demo.pids").exists()  # stale: nobody removed it
    finally:
        if proc.poll() is None:
            proc.kill()
        reap(state)
    r = subprocess.run(
        [*DEMO, "--smoke", "--state", str(state)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "channel #1 'Demo channel'" in r.stdout
        and "business clock: manual, now 2026-01-05T09:00:00Z" in r.stdout
    )
    assert not (state / "demo.pids").exists()


class Terminal:
    """The demo under a pseudo-terminal (80×24), its output drained by a thread."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"},
        )
        os.close(slave)
        self.output = bytearray()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        self.thread.join(5)


@pytest.mark.parametrize("ending", ["ctrl+q", "tui killed", "sigterm", "sigint"])
def test_nothing_the_demo_started_outlives_its_tui(state, ending):
    term = Terminal([*DEMO, "--state", str(state)])
    try:
        wait_until(
            lambda: "tui" in read_pids(state) or term.proc.poll() is not None, what="TUI started"
        )
        assert term.proc.poll() is None, term.text()
        pids = read_pids(state)
        # the dashboard is up, connected to the demo's daemon
        # (the summary printed before the TUI names the channel too: look past the alternate screen's start)
        wait_until(
            lambda: "Demo channel" in term.text().partition("\x1b[?1049h")[2],
            what=f"dashboard drawn; got {term.text()[-2000:]!r}",
        )
        if ending == "ctrl+q":
            os.write(term.master, b"\x11")
        elif ending == "tui killed":
            os.kill(pids["tui"], signal.SIGKILL)
        elif ending == "sigterm":
            term.proc.send_signal(signal.SIGTERM)
        else:  # Ctrl-C while the TUI holds the terminal in raw mode reaches the script as a signal only this way
            term.proc.send_signal(signal.SIGINT)
        code = term.proc.wait(60)
        assert code == (1 if ending == "tui killed" else 0), term.text()[-2000:]
        assert_all_gone(pids, state)
        # only what it actually stopped: a TUI that was killed is not claimed
        assert (
            f"demo: stopped the daemon (pid {pids['daemon']}) and sellsim (pid {pids['sellsim']})"
            in term.text()
        )
    finally:
        term.close()
        reap(state)


def sync_runs(state: Path) -> int:
    import sqlite3

    with sqlite3.connect(state / "kuloo.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM sync_run").fetchone()[0]


def lead_kulooid(state: Path, email: str) -> str:
    world = json.loads((state / "sellsim-state.json").read_text())
    records = world["accounts"][0]["records"]["lead"]
    return next(r for r in records if r["email"] == email)["custom_fields"]["KulooId"]


def test_a_resume_keeps_the_admins_fix_the_links_port_and_adds_no_sync_run(state):
    """Planted bugs: a resume that breaks the KulooId again, picks a new links port, syncs twice."""
    proc = subprocess.Popen(
        [*DEMO, "--no-tui", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        wait_until(lambda: "demo: ready\n" in lines or proc.poll() is not None, what="demo ready")
        assert proc.poll() is None, "".join(lines)
        assert "sync: not run on this resume" in "".join(lines)
        sell_url = (state / "sellsim.url").read_text().strip()
        with ControlClient(str(state / "control.sock"), timeout=30) as c:
            links = c.call("status")["links"]["url"]
            user = c.call("users.get", {"channel": 1, "email": "ines.quist.28@example.com"})
            # the admin fixes the KulooId in Sell, as the sync error says
            req = urllib.request.Request(
                f"{sell_url}/_sim/ui/lead/{user['crm']['id']}",
                method="PUT",
                data=json.dumps({"custom_fields": {"KulooId": user["kuloo_id"]}}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=30).close()
            assert c.call("sync.run", {"channel": 1})["status"] in ("ok", "partial")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        reap(state)
    runs = sync_runs(state)
    r = subprocess.run(
        [*DEMO, "--smoke", "--state", str(state)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert lead_kulooid(state, "ines.quist.28@example.com") == user["kuloo_id"]  # not broken again
    assert f"links service (unsubscribe, frequency, signup): {links}" in r.stdout  # the same port
    assert sync_runs(state) == runs
    r = subprocess.run(
        [*DEMO, "--smoke", "--sync", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and sync_runs(state) == runs + 1  # only when asked


def test_a_daemon_the_demo_did_not_start_is_named_and_left_alone(state):
    """A daemon started by hand on the demo's state: the demo refuses, says what to do, and
    neither uses nor stops it."""
    import tomllib

    config = state / "kuloo.toml"  # written for the state this one was copied from: point it here
    config.write_text(
        config.read_text().replace(
            tomllib.loads(config.read_text())["daemon"]["state_dir"], str(state)
        )
    )
    log = open(state / "stranger.log", "wb")  # noqa: SIM115 - closed in finally
    stranger = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "kuloo-daemon"),
            "run",
            "--config",
            str(state / "kuloo.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: (state / "control.sock").exists() or stranger.poll() is not None,
            what="stranger up",
        )
        assert stranger.poll() is None, (state / "stranger.log").read_text()
        r = subprocess.run(
            [*DEMO, "--smoke", "--state", str(state)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode != 0
        assert (
            f"a kuloo-daemon this demo did not start holds {state}'s database (pid {stranger.pid}"
            in r.stderr
        )
        assert f"kill {stranger.pid}" in r.stderr
        assert stranger.poll() is None  # left alone
        assert not (state / "demo.pids").exists()
    finally:
        stranger.terminate()
        stranger.wait(30)
        log.close()
