"""Retention: the daemon prunes 1,000,000 old audit entries while control calls keep coming.

The daemon runs as a subprocess on SQLite with the manual clock set a year and a half after
the entries were written, so the daily retention job finds them all old at start. A client
calls ``status`` and ``users.list`` back to back meanwhile; the figures are the pruning rate
and the control calls' latency (worst and 99th percentile; the goal is 100 ms worst).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kuloo_daemon.control.client import ControlClient

ROWS = int(os.environ.get("KULOO_BENCH_AUDIT_ROWS", "1000000"))


def _config(root: Path) -> Path:
    path = root / "kuloo.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{root}/state"\n[control]\nsocket = "{root}/c.sock"\n'
        '[clock]\nmode = "manual"\nstart = "2027-06-01T00:00:00Z"\n'
        '[links]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\nlevel = "info"\n'
        '[sell]\nbase_url = "http://127.0.0.1:9"\n'
    )
    return path


def _fill(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO channel (id, name, plan, add_all_users_to_crm, sequential_tags, sender, "
            "postal_address, connection_status, connection_problems, sync_state, sync_status, "
            "created_at, updated_at) VALUES (1, 'bench', 'pro', 0, '[]', '', '', 'none', '[]', '{}', '', "
            "'2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"
        )
        conn.executemany(
            "INSERT INTO audit_entry (channel_id, user_id, at, actor, field, old, new, note) "
            "VALUES (1, NULL, ?, 'admin', 'frequency', '\"weekly\"', '\"daily\"', '')",
            (
                (f"2026-01-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",)
                for i in range(ROWS)
            ),
        )


def main() -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="kr", dir="/tmp"))
    config = _config(root)
    cli = [sys.executable, "-m", "kuloo_daemon.cli"]
    subprocess.run([*cli, "migrate", "--config", str(config)], check=True, capture_output=True)
    started = time.perf_counter()
    _fill(root / "state" / "kuloo.sqlite3")
    print(f"   {ROWS:,} audit entries written in {time.perf_counter() - started:.1f} s")
    log = open(root / "daemon.log", "wb")
    proc = subprocess.Popen(
        [*cli, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while not (root / "c.sock").exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((root / "daemon.log").read_text()[-2000:])
            time.sleep(0.05)
        began = time.perf_counter()
        with ControlClient(str(root / "c.sock"), timeout=30) as client:
            while b"pruned old rows" not in (root / "daemon.log").read_bytes():
                for method, params in (("status", {}), ("users.list", {"channel": 1, "limit": 50})):
                    t = time.perf_counter()
                    client.call(method, params)
                    latencies.append((time.perf_counter() - t) * 1000)
                if time.perf_counter() - began > 600:
                    raise RuntimeError("pruning did not finish within 10 minutes")
        took = time.perf_counter() - began
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    with sqlite3.connect(root / "state" / "kuloo.sqlite3") as conn:
        left = conn.execute("SELECT count(*) FROM audit_entry").fetchone()[0]
    if left:
        raise RuntimeError(f"{left:,} audit entries were left")
    latencies.sort()
    worst, p99 = latencies[-1], latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"   pruned {ROWS:,} rows in {took:.1f} s ({ROWS / took:,.0f} rows/s) while {len(latencies):,} control "
        f"calls answered: median {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, worst {worst:.1f} ms "
        "(goal: worst <= 100 ms)"
    )
    return {
        "audit rows pruned per second": ROWS / took,
        "control call worst ms while pruning": worst,
        "control call p99 ms while pruning": p99,
    }


if __name__ == "__main__":
    main()
