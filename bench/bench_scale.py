"""Scale-out on PostgreSQL: one daemon against three, sharing 30 channels by lease.

A throwaway PostgreSQL server (initdb + pg_ctl, fsync off), sellsim as its own process with
30 accounts (one token each, the rate limit lifted: loopback), and N daemon processes on
one database, scheduled on the wall clock with ``[sync] cadence_seconds = 1`` so every
channel is always due and the figure is the daemons' throughput, not the cadence.

Figures: channels synced per minute (runs finished ok/partial in a measured window after
the initial syncs) for 1 and 3 daemons, and the 1 → 3 ratio. Each daemon syncs at most
``[sync] parallel_runs`` channels at once (4 here, so that one daemon's share is visible).

On this 2-core machine the ratio is bounded by the cores: three daemons, sellsim and
PostgreSQL share two, so the ≥ 2.5× goal needs a machine with a core per daemon (and
sellsim and the database elsewhere). Skips, saying why, without PostgreSQL binaries.

Emails per second to a local SMTP sink (aiosmtpd in its own process), for 1 and 3 daemons
and the ratio: ``MAIL_CHANNELS`` channels with ``MAIL_USERS`` subscribers each (tag
``welcome``, added before any article exists, so nothing is due); then one daemon imports
each channel's welcome article (delay 0), every daemon hears ``articles.changed`` (LISTEN/
NOTIFY) and the channels' delivery passes are shared by lease. The figure: emails sent
(outbox ``sent``) from the first import until all are sent, per second of that span.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kuloo_daemon.control.client import ControlClient
from sellsim.seeds import account_token, many_accounts_seed

CHANNELS = 30
WARMUP = float(os.environ.get("KULOO_BENCH_SCALE_WARMUP", "8"))
WINDOW = float(os.environ.get("KULOO_BENCH_SCALE_SECONDS", "30"))
PARALLEL = 4


def token(i: int) -> str:
    return account_token("bench-scale", i)


def seed() -> dict:
    return many_accounts_seed("bench-scale", CHANNELS, leads=20)


def stop(procs) -> None:
    """SIGTERM every daemon, then wait (a kill after 15 s)."""
    for proc, _sock in procs:
        proc.send_signal(signal.SIGTERM)
    for proc, _sock in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = os.path.dirname(bins[-1])
        self.root = tempfile.mkdtemp(dir="/tmp", prefix="kbs-")
        self.port = free_port()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            f"{self.root}/data",
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._run(
            "pg_ctl",
            "-D",
            f"{self.root}/data",
            "-w",
            "-l",
            f"{self.root}/log",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c max_connections=200",
            "start",
        )

    def _run(self, tool: str, *args: str) -> None:
        cmd = [f"{self.bin}/{tool}", *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def sql(self, statement: str, database: str = "postgres") -> str:
        r = subprocess.run(
            [
                f"{self.bin}/psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return r.stdout.strip()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", f"{self.root}/data", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_sellsim(root: Path) -> tuple[subprocess.Popen, str]:
    path = root / "seed.json"
    path.write_text(json.dumps(seed()))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sellsim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            str(path),
            "-o",
            "rate_per_second=1000000",
            "-o",
            "rate_per_hour=1000000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1]


def start_daemon(
    root: Path, url: str, sell_url: str, extra: str = ""
) -> tuple[subprocess.Popen, str]:
    root.mkdir(parents=True)
    sock = str(root / "c.sock")
    (root / "k.toml").write_text(
        f'[daemon]\nstate_dir = "{root}/state"\nscheduler_tick_seconds = 0.2\nshutdown_grace_seconds = 3\n'
        f'[control]\nsocket = "{sock}"\n[store]\nurl = "{url}"\nlease_seconds = 5\n'
        f"[sync]\ncadence_seconds = 1\nparallel_runs = {PARALLEL}\n"
        f'[sell]\nbase_url = "{sell_url}"\nrequests_per_second = 5000\nmax_attempts = 3\n'
        '[links]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warning"\nformat = "json"\n' + extra
    )
    log = open(root / "daemon.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(root / "k.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"daemon did not start: {(root / 'daemon.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, sock


def measure(pg: Postgres, sell_url: str, daemons: int, root: Path) -> float:
    db = f"scale{daemons}"
    pg.sql(f"CREATE DATABASE {db}")
    procs = []
    try:
        for i in range(daemons):
            procs.append(start_daemon(root / f"n{daemons}d{i}", pg.url(db), sell_url))
            if i == 0:
                with ControlClient(procs[0][1], timeout=120) as c:
                    for ch in range(CHANNELS):
                        c.call(
                            "channels.create",
                            {"name": f"Channel {ch}", "plan": "enterprise", "api_token": token(ch)},
                        )
        time.sleep(WARMUP)  # the initial syncs (20 leads imported per channel) are not measured
        done = "SELECT count(*) FROM sync_run WHERE status IN ('ok', 'partial') AND finished_at IS NOT NULL"
        before, t0 = int(pg.sql(done, db)), time.monotonic()
        time.sleep(WINDOW)
        after, t1 = int(pg.sql(done, db)), time.monotonic()
        per_daemon = pg.sql(
            "SELECT daemon_id, count(*) FROM sync_run GROUP BY daemon_id ORDER BY 1", db
        )
        rate = (after - before) * 60 / (t1 - t0)
        print(
            f"   {daemons} daemon(s): {after - before} runs in {t1 - t0:.1f} s = {rate:,.0f} channels synced/min "
            f"(runs per daemon: {per_daemon.replace(chr(10), ', ')})",
            flush=True,
        )
        return rate
    finally:
        stop(procs)


MAIL_CHANNELS = int(os.environ.get("KULOO_BENCH_SCALE_MAIL_CHANNELS", "12"))
MAIL_USERS = int(os.environ.get("KULOO_BENCH_SCALE_MAIL_USERS", "100"))
WELCOME = (
    "---\nid: welcome\ntitle: Welcome\ntags: [welcome]\npublished_at: 2026-01-01\ndelay_seconds: 0\n---\n"
    + (
        "A short welcome, with **one** [link](https://example.com/a) and a list:\n\n- one\n- two\n\n"
        * 8
    )
)


def start_sink() -> tuple[subprocess.Popen, int]:
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return sink, port
        except OSError:
            time.sleep(0.05)
    sink.kill()
    raise RuntimeError("the SMTP sink did not start")


def measure_mail(pg: Postgres, smtp_port: int, daemons: int, root: Path) -> float:
    db = f"mail{daemons}"
    pg.sql(f"CREATE DATABASE {db}")
    shared = root / f"mail{daemons}"
    (shared / "creds").mkdir(parents=True)
    (shared / "creds" / "link-signing-key").write_text("bench-scale-signing-key-0123456789\n")
    for ch in range(MAIL_CHANNELS):
        (shared / "articles" / f"c{ch}").mkdir(parents=True)
        (shared / "articles" / f"c{ch}" / "welcome.md").write_text(WELCOME)
    extra = (
        f'[credentials]\ndirectory = "{shared}/creds"\n[articles]\nroot = "{shared}/articles"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
        "[delivery]\nmessages_per_second = 10000\nbatch_size = 100\n"
    )
    procs = []
    try:
        for i in range(daemons):
            procs.append(
                start_daemon(root / f"m{daemons}d{i}", pg.url(db), "http://127.0.0.1:9", extra)
            )
        total = MAIL_CHANNELS * MAIL_USERS
        with ControlClient(procs[0][1], timeout=120) as c:
            channels = [
                c.call(
                    "channels.create",
                    {
                        "name": f"Mail {ch}",
                        "sender": f"News <n{ch}@bench.test>",
                        "postal_address": "1 Bench Road",
                        "sequential_tags": ["welcome"],
                    },
                )["id"]
                for ch in range(MAIL_CHANNELS)
            ]
            for cid in channels:
                for u in range(MAIL_USERS):
                    c.call(
                        "users.add",
                        {
                            "channel": cid,
                            "email": f"u{u}.c{cid}@example.net",
                            "promo_tags": ["welcome"],
                            "frequency": "disabled",
                        },
                    )
            t0 = time.monotonic()
            for ch, cid in enumerate(channels):
                c.call("articles.import", {"channel": cid, "path": f"c{ch}"})
        sent_sql = "SELECT count(*) FROM outbox_message WHERE state = 'sent'"
        deadline = t0 + 600
        sent = 0
        while sent < total and time.monotonic() < deadline:
            time.sleep(0.05)
            sent = int(pg.sql(sent_sql, db))
        seconds = time.monotonic() - t0
        if sent < total:
            states = pg.sql("SELECT state, count(*) FROM outbox_message GROUP BY 1", db)
            raise RuntimeError(f"only {sent} of {total} emails sent in {seconds:.0f} s ({states})")
        rate = sent / seconds
        print(
            f"   {daemons} daemon(s): {sent} emails ({MAIL_CHANNELS} channels x {MAIL_USERS}) to the SMTP sink "
            f"in {seconds:.1f} s = {rate:,.0f} emails/s",
            flush=True,
        )
        return rate
    finally:
        stop(procs)


def main() -> dict[str, float]:
    try:
        pg = Postgres()
    except (RuntimeError, KeyError, subprocess.CalledProcessError) as exc:
        print(f"   SKIPPED: PostgreSQL unavailable ({exc})")
        return {}
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kbs-run-"))
    sim, sell_url = start_sellsim(root)
    sink = None
    try:
        one = measure(pg, sell_url, 1, root)
        three = measure(pg, sell_url, 3, root)
        sim.terminate()  # no Sell in the mail figures: its CPU goes back to the daemons
        sim.wait(10)
        sink, smtp_port = start_sink()
        mail_one = measure_mail(pg, smtp_port, 1, root)
        mail_three = measure_mail(pg, smtp_port, 3, root)
    finally:
        if sim.poll() is None:
            sim.terminate()
            sim.wait(10)
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    ratio = three / one if one else 0.0
    mail_ratio = mail_three / mail_one if mail_one else 0.0
    print(
        f"   scaling 1 -> 3 daemons: {ratio:.2f}x channels synced/min, {mail_ratio:.2f}x emails/s, "
        f"on {os.cpu_count()} core(s) (goal >= 2.5x needs a core per daemon; here three daemons, sellsim or "
        "the SMTP sink, and PostgreSQL share them)"
    )
    return {
        "channels_synced_per_min_1_daemon": one,
        "channels_synced_per_min_3_daemons": three,
        "scaling_1_to_3": ratio,
        "emails_per_s_1_daemon": mail_one,
        "emails_per_s_3_daemons": mail_three,
        "emails_scaling_1_to_3": mail_ratio,
    }


if __name__ == "__main__":
    main()
