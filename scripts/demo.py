"""`make demo`: sellsim, the daemon, a seeded and synced demo channel, then the admin TUI.

Everything lives under ./demo-state (or ``--state``):

1. sellsim with config/sellsim-demo.json on a free loopback port (a Pro account with the
   six Kuloo fields, 36 leads — one already converted, two sharing one email — and 22
   contacts), its state kept in sellsim-state.json;
2. the daemon on SQLite (demo-state/kuloo.toml, written from config/demo.toml): Maildir
   delivery, the links service on a free loopback port, the manual clock;
3. the demo channel connected to sellsim's account, config/articles/ imported, a first sync;
4. one lead's KulooId broken in sellsim through sellsim's HTTP API (as a Sell user editing
   the lead would), then a second sync, so the Sync errors screen has something real;
5. ``kuloo-tui`` in the foreground. Quitting it stops everything the demo started.

The daemon and sellsim run in their own sessions (a Ctrl-C reaches this script, which
stops them in order) and get SIGTERM if this script dies (``PR_SET_PDEATHSIG``). Their
logs are demo-state/daemon.log and demo-state/sellsim.log. demo-state/demo.pids names
the running processes; a second ``make demo`` refuses to start beside a live demo, and
stops what a killed demo left behind.

A second run **reuses** demo-state: the channel, your users, the clock, the mail and
sellsim's records are kept, and so are the links service's and sellsim's ports (links in
earlier demo emails keep working). Only the first set-up breaks a KulooId and syncs twice;
a resume changes nothing (``--sync`` syncs once). ``--reset`` starts over.

The demo knows its own processes: it refuses to start when the state's database lock or
control socket belongs to a daemon it did not start (saying which and what to do), checks
that the daemon answering its socket is the one it started, restarts its daemon if it dies
while the TUI is open, and reports only what it actually stopped.

``--no-tui`` sets everything up, prints how to talk to it and waits for Ctrl-C or
SIGTERM; ``--smoke`` sets everything up and stops at once (both used by the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from kuloo_daemon.control.client import ControlClient, ControlError  # noqa: E402

CHANNEL = {
    "name": "Demo channel",
    "plan": "pro",
    "sequential_tags": ["welcome", "onboarding", "upsell"],
    "sender": "Kuloo Demo <news@kuloo-demo.test>",
    "postal_address": "Kuloo Demo, 1 Example Street, Springfield",
}
# The lead whose KulooId a "Sell user" overwrites, and what they type there.
BROKEN_EMAIL = "ines.quist.28@example.com"
BROKEN_VALUE = "typed-over-by-a-sell-user"
PIDS = "demo.pids"
SETUP = "setup.json"  # what the first set-up did, and the ports kept across resumes
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stop(Exception):
    """SIGTERM or SIGHUP arrived: unwind and stop everything (like Ctrl-C)."""


def _on_signal(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def toml_dump(data: dict) -> str:
    out = []
    for section, body in data.items():
        out.append(f"[{section}]")
        for key, value in body.items():
            out.append(f"{key} = {json.dumps(value)}")
        out.append("")
    return "\n".join(out)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the demo script dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Demo:
    """The processes the demo started, in start order, and the pid file that names them."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []
        self.saved_tty: list | None = None  # the terminal's modes before the TUI took it

    def restore_terminal(self) -> None:
        """After a TUI that did not quit by itself (killed, crashed): the terminal as it was."""
        if self.saved_tty is None:
            return
        import termios

        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved_tty)
        # leave the alternate screen, stop mouse reporting, show the cursor
        sys.stdout.write("\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?25h")
        sys.stdout.flush()
        self.saved_tty = None

    def spawn(self, name: str, argv: list[str], *, own_session: bool = True) -> subprocess.Popen:
        if own_session:
            log = open(self.state / f"{name}.log", "ab")  # noqa: SIM115 — closed in stop()
            self.logs.append(log)
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        else:  # the TUI: in our process group, so it owns the terminal with us
            proc = subprocess.Popen(argv, preexec_fn=_die_with_parent)
        self.procs[name] = proc
        self.write_pids()
        return proc

    def write_pids(self) -> None:
        pids = {"demo": os.getpid(), **{name: p.pid for name, p in self.procs.items()}}
        tmp = self.state / (PIDS + ".tmp")
        tmp.write_text(json.dumps(pids) + "\n")
        tmp.rename(self.state / PIDS)  # a reader never sees half a file

    def stop(self) -> list[str]:
        """The TUI, then the daemon (it drains), then sellsim (it saves its state); returns
        what was still running and got stopped."""
        stopped = []
        for name in ("tui", "daemon", "sellsim"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                stopped.append(f"{'the daemon' if name == 'daemon' else name} (pid {proc.pid})")
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15 if name == "daemon" else 5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if name == "tui":
                    self.restore_terminal()
            if name != "tui":  # anything its session left behind
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for log in self.logs:
            log.close()
        with contextlib.suppress(FileNotFoundError):
            (self.state / PIDS).unlink()
        return [name for name in stopped if not name.startswith("tui")]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def clear_leftovers(state: Path) -> None:
    """Refuse to start beside a running demo; stop what a killed one left (only our own processes)."""
    path = state / PIDS
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    demo = pids.pop("demo", None)
    if (
        isinstance(demo, int)
        and demo != os.getpid()
        and _alive(demo)
        and "demo.py" in _cmdline(demo)
    ):
        raise SystemExit(
            f"demo: a demo is already running on {state} (pid {demo}); quit its TUI, "
            f"or `kill {demo}`, then run it again"
        )
    left = [
        pid
        for pid in pids.values()
        if isinstance(pid, int) and _alive(pid) and str(state) in _cmdline(pid)
    ]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        print(
            f"demo: stopped {len(left)} process(es) a previous demo left running", file=sys.stderr
        )
    path.unlink()


def _lock_holder(state: Path) -> int | None:
    """The pid of a process holding the state's database lock (a daemon), or None."""
    import fcntl

    lock = state / "kuloo.sqlite3.lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = lock.read_text(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def refuse_strangers(state: Path) -> None:
    """Nothing but this demo may hold the state: a daemon started by hand is named, not used."""
    holder = _lock_holder(state)
    if holder is not None:
        who = (
            f"pid {holder}: {_cmdline(holder).strip() or '?'}"
            if holder > 0
            else "an unknown process"
        )
        raise SystemExit(
            f"demo: a kuloo-daemon this demo did not start holds {state}'s database ({who}); "
            f"stop it{f' (kill {holder})' if holder > 0 else ''}, then run `make demo` again"
        )
    sock = state / "control.sock"
    if sock.exists():
        try:
            with ControlClient(str(sock), timeout=5, client_name="demo") as client:
                pid = client.call("status").get("pid")
        except (OSError, ControlError):
            return  # a stale socket file: the daemon replaces it
        raise SystemExit(
            f"demo: a kuloo-daemon this demo did not start (pid {pid}) answers on {sock}; "
            f"stop it (kill {pid}), then run `make demo` again"
        )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_setup(state: Path) -> dict:
    try:
        return json.loads((state / SETUP).read_text())
    except (OSError, ValueError):
        return {}


def save_setup(state: Path, setup: dict) -> None:
    tmp = state / (SETUP + ".tmp")
    tmp.write_text(json.dumps(setup, indent=1) + "\n")
    tmp.rename(state / SETUP)


def kept_port(setup: dict, name: str) -> int:
    """The port this demo used before (kept so that its links keep working), else a new one."""
    port = setup.get(name)
    if isinstance(port, int) and _port_free(port):
        return port
    if isinstance(port, int):
        print(
            f"demo: port {port} ({name}) is taken now; using another one (earlier links to it will not "
            "work)",
            file=sys.stderr,
        )
    setup[name] = _free_port()
    return setup[name]


def start_sellsim(demo: Demo, port: int = 0) -> str:
    log = demo.state / "sellsim.log"
    start = log.stat().st_size if log.exists() else 0
    proc = demo.spawn(
        "sellsim",
        [
            str(BIN / "kuloo-sell-sim"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--seed",
            str(ROOT / "config" / "sellsim-demo.json"),
            "--state",
            str(demo.state / "sellsim-state.json"),
        ],
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log, "rb") as fh:
            fh.seek(start)
            for line in fh.read().decode(errors="replace").splitlines():
                if "listening on http://" in line:
                    return line[line.index("http://") :].strip()
        if proc.poll() is not None:
            raise SystemExit(f"demo: sellsim exited with {proc.returncode}; see {log}")
        time.sleep(0.05)
    raise SystemExit(f"demo: sellsim did not start within 30 s; see {log}")


def sellsim_call(url: str, method: str, path: str, body: dict | None = None) -> object:
    """sellsim's own HTTP API (``/_sim/...``): what a Sell user does in Sell's web UI."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def write_config(state: Path, sell_url: str, links_port: int = 0) -> Path:
    data = tomllib.loads((ROOT / "config" / "demo.toml").read_text())
    data["links"]["listen"] = f"127.0.0.1:{links_port}"
    data["daemon"]["state_dir"] = str(state)
    data["control"]["socket"] = str(state / "control.sock")
    data["credentials"]["directory"] = str(state / "credentials")
    data["sell"]["base_url"] = sell_url
    data["sell"]["web_url"] = sell_url + "/_sim/web"  # record links open sellsim's pages
    data["articles"]["root"] = str(ROOT / "config" / "articles")
    data["delivery"]["maildir"] = str(state / "maildir")
    path = state / "kuloo.toml"
    path.write_text("# Written by `make demo` from config/demo.toml.\n" + toml_dump(data))
    return path


def make_credentials(state: Path) -> None:
    creds = state / "credentials"
    creds.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = creds / "link-signing-key"
    if not key.exists():
        key.write_text(secrets.token_urlsafe(32))
        key.chmod(0o600)


def connect(path: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> ControlClient:
    """The control connection to the daemon this demo started (never to another one)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = ControlClient(path, timeout=60, client_name="demo")
            pid = client.call("status").get("pid")
            if pid != proc.pid:
                client.close()
                raise SystemExit(
                    f"demo: the daemon answering {path} (pid {pid}) is not the one this demo "
                    f"started (pid {proc.pid}, see {log}); stop it (kill {pid}) and run `make demo` "
                    "again"
                )
            return client
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(
                    f"demo: the daemon exited with {proc.returncode}; see {log}"
                ) from None
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"demo: the daemon's control socket did not come up; see {log}"
                ) from None
            time.sleep(0.1)


def ensure_channel(client: ControlClient, token: str) -> dict:
    try:
        doc = client.call("channels.get", {"name": CHANNEL["name"]})
    except ControlError as exc:
        if exc.code != "not_found":
            raise
        doc = client.call("channels.create", {**CHANNEL, "api_token": token})
    return client.call("channels.verify", {"id": doc["id"]})


def break_kulooid(client: ControlClient, channel: int, sell_url: str) -> dict:
    """A Sell user types over one lead's KulooId (sellsim's UI endpoint, not the daemon)."""
    user = client.call("users.get", {"channel": channel, "email": BROKEN_EMAIL})
    crm = user.get("crm") or {}
    if crm.get("kind") == "lead" and crm.get("id"):
        sellsim_call(
            sell_url,
            "PUT",
            f"/_sim/ui/lead/{crm['id']}",
            {"custom_fields": {"KulooId": BROKEN_VALUE}},
        )
    return user


def start_daemon(demo: Demo, config: Path) -> subprocess.Popen:
    return demo.spawn("daemon", [str(BIN / "kuloo-daemon"), "run", "--config", str(config)])


def set_up(demo: Demo, token: str, sync: bool = False) -> dict:
    """Everything but the TUI; returns what the summary prints.

    The first set-up imports the articles, syncs, breaks one KulooId and syncs again; a
    resume only reconnects (an admin's fix of that KulooId stays fixed) and syncs once if
    asked (``--sync``).
    """
    state = demo.state
    setup = load_setup(state)
    first_time = not setup.get("set_up")
    sell_url = start_sellsim(demo, kept_port(setup, "sellsim_port"))
    (state / "sellsim.url").write_text(
        sell_url + "\n"
    )  # for scripts: SELL=$(cat demo-state/sellsim.url)
    config = write_config(state, sell_url, kept_port(setup, "links_port"))
    save_setup(state, setup)
    daemon = start_daemon(demo, config)
    sock = str(state / "control.sock")
    runs: tuple = ()
    with connect(sock, daemon, state / "daemon.log") as client:
        doc = ensure_channel(client, token)
        channel = doc["id"]
        articles = (
            client.call("articles.import", {"channel": channel, "path": "."})
            if first_time
            else None
        )
        if first_time:
            runs = (client.call("sync.run", {"channel": channel}),)
            break_kulooid(client, channel, sell_url)
            runs += (client.call("sync.run", {"channel": channel}),)
            setup["set_up"] = True
            save_setup(state, setup)
        elif sync:
            runs = (client.call("sync.run", {"channel": channel}),)
        errors = client.call("sync.errors", {"channel": channel})["errors"]
        users = client.call("users.list", {"channel": channel, "limit": 1})["total"]
        status = client.call("status")
    return {
        "sell_url": sell_url,
        "sock": sock,
        "doc": doc,
        "articles": articles,
        "runs": runs,
        "errors": errors,
        "users": users,
        "status": status,
        "config": config,
        "first_time": first_time,
    }


def describe_runs(runs: tuple) -> str:
    if not runs:
        return "not run on this resume (`make demo DEMO_ARGS=--sync` syncs once)"
    words = ("first run", "second run") if len(runs) == 2 else ("run",)
    return ", ".join(f"{word} {run['status']}" for word, run in zip(words, runs, strict=False))


def describe_articles(articles: dict | None) -> str:
    if articles is None:
        return "kept from the first set-up"
    return (
        f"{articles['imported']} new, {articles['updated']} updated, {articles['unchanged']} unchanged, "
        f"{len(articles['problems'])} problem(s) (the clipped one needs its page served)"
    )


def summary(demo: Demo, s: dict, tui: bool) -> str:
    doc, articles, status, state = s["doc"], s["articles"], s["status"], demo.state
    ctl = f"{BIN / 'kuloo-ctl'} --socket {s['sock']}"
    problems = "".join(f"\n  - {p}" for p in doc["connection"]["problems"])
    errors = "".join(f"\n  - {e['email'] or '(no email)'}: {e['error']}" for e in s["errors"])
    broken = f" (a Sell user typed over {BROKEN_EMAIL}'s KulooId)" if s["first_time"] else ""
    then = (
        "Opening the TUI (kuloo-tui); Ctrl+Q quits it and stops everything."
        if tui
        else "Ctrl-C (or SIGTERM) stops the daemon and sellsim."
    )
    return f"""
== Kuloo Sync demo ==
sellsim (Zendesk Sell simulator): {s["sell_url"]}   (state: {state / "sellsim-state.json"})
daemon: pid {status["pid"]}, store {status["store"]}, log {state / "daemon.log"}
links service (unsubscribe, frequency, signup): {(status.get("links") or {}).get("url")}
business clock: {status["clock"]["mode"]}, now {status["clock"]["now"]} (it moves only when you move it)
channel #{doc["id"]} {doc["name"]!r}: plan {doc["plan"]}, token {doc["api_token"]}, \
connection {doc["connection"]["status"]}{problems}
articles: {describe_articles(articles)}; emails go to {state / "maildir"}
sync: {describe_runs(s["runs"])}; {s["users"]} users; {len(s["errors"])} sync error(s){broken}{errors}
Try, in another terminal (the README walks through more):
  {ctl} status
  {ctl} users list --query ines
  {ctl} sync errors
  {ctl} clock.advance '{{"seconds": 86400}}'   # a day passes: due work (sequences, digests) runs before the reply
  {ctl} outbox list
{then}
"""


def keep_daemon_up(demo: Demo, config: Path, stop: threading.Event) -> None:
    """While the TUI is open: a daemon of this demo that died is started again (the TUI
    reconnects by itself and its banner says so meanwhile)."""
    while not stop.wait(1.0):
        daemon = demo.procs.get("daemon")
        if daemon is not None and daemon.poll() is not None and not stop.is_set():
            with open(demo.state / "daemon.log", "ab") as log:
                log.write(
                    f"demo: the daemon exited with {daemon.returncode}; starting it again\n".encode()
                )
            start_daemon(demo, config)


def run_tui(demo: Demo, sock: str, config: Path | None = None) -> int:
    """The TUI in the foreground; 0 when it was quit, else 1."""
    if sys.stdin.isatty():
        import termios

        demo.saved_tty = termios.tcgetattr(sys.stdin.fileno())
    os.environ["KULOO_TUI_RESTART_HINT"] = "the demo starts its daemon again by itself"
    tui = demo.spawn("tui", [str(BIN / "kuloo-tui"), "--socket", sock], own_session=False)
    stop = threading.Event()
    watcher = None
    if config is not None:
        watcher = threading.Thread(target=keep_daemon_up, args=(demo, config, stop), daemon=True)
        watcher.start()
    try:
        code = tui.wait()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(5)
    if code != 0:
        demo.restore_terminal()
        print(f"demo: the TUI exited with status {code}; stopping everything", file=sys.stderr)
    return 0 if code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state", default=str(ROOT / "demo-state"), help="folder for all demo state (./demo-state)"
    )
    parser.add_argument(
        "--reset", action="store_true", help="delete the state folder first and start over"
    )
    parser.add_argument(
        "--no-tui",
        action="store_true",
        help="do not open the TUI: print how to reach the demo and wait for Ctrl-C or SIGTERM",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="set everything up, print the summary and stop"
    )
    parser.add_argument(
        "--sync", action="store_true", help="on a resume, sync once before opening the TUI"
    )
    args = parser.parse_args(argv)
    state = Path(args.state).resolve()
    if state.exists():
        clear_leftovers(state)
        refuse_strangers(state)
        if args.reset:
            shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    make_credentials(state)
    seed = json.loads((ROOT / "config" / "sellsim-demo.json").read_text())
    token = seed["accounts"][0]["tokens"][0]["token"]

    demo = Demo(state)
    code = 0
    try:
        s = set_up(demo, token, sync=args.sync)
        tui = not (args.no_tui or args.smoke)
        print(summary(demo, s, tui), flush=True)
        if args.smoke:
            return 0
        if tui:
            code = run_tui(demo, s["sock"], s["config"])
        else:
            print("demo: ready", flush=True)
            while all(p.poll() is None for p in demo.procs.values()):
                time.sleep(0.5)
            gone = [name for name, p in demo.procs.items() if p.poll() is not None]
            print(
                f"demo: {', '.join(gone)} exited; stopping everything (see {state}/*.log)",
                file=sys.stderr,
            )
            code = 1
    except (KeyboardInterrupt, Stop):
        code = 0
    finally:
        # a second Ctrl-C or SIGTERM while stopping must not leave anything running
        for signum in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(signum, signal.SIG_IGN)
        stopped = demo.stop()
    if not args.smoke:
        what = " and ".join(stopped) if stopped else "nothing (everything had already exited)"
        print(
            f"demo: stopped {what}; {state} is kept (`make demo` resumes it, "
            "`make demo DEMO_ARGS=--reset` starts over)"
        )
    return code


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for _signum in STOP_SIGNALS:
        signal.signal(_signum, _on_signal)
    os.chdir(ROOT)
    raise SystemExit(main())
