"""Links service: one-click unsubscribe POSTs per second with the daemon on one core, and p99 latency.

The daemon runs as a subprocess pinned to CPU 0 (real SQLite, info logging to a file, the
rate limit raised); this process drives it from CPU 1 with 16 concurrent keep-alive
connections. Two phases: first-time unsubscribes (each writes the user, its audit entry
and the revision) and repeats (idempotent: a read, no write).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from kuloo_daemon.control.client import ControlClient
from kuloo_daemon.tokens import Claim, Purpose, Signer

KEY = "bench-links-signing-key-0123456789"
USERS = 3000
CONCURRENCY = 16


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(0, {cpu})


def _start(root: Path) -> tuple[subprocess.Popen, str]:
    creds = root / "creds"
    creds.mkdir()
    (creds / "link-signing-key").write_text(KEY)
    sock = root / "c.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "n.sock"))
    (root / "k.toml").write_text(
        f'[daemon]\nstate_dir = "{root / "state"}"\n[control]\nsocket = "{sock}"\n'
        f'[log]\nformat = "json"\nlevel = "info"\n[credentials]\ndirectory = "{creds}"\n'
        '[sell]\nbase_url = "http://127.0.0.1:9"\n'
        '[links]\nlisten = "127.0.0.1:0"\nrate_per_minute = 1000000\nrate_burst = 1000000\n'
    )
    log = open(root / "daemon.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(root / "k.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: _pin(0),
        env={**os.environ, "NOTIFY_SOCKET": str(root / "n.sock")},
    )
    notify.settimeout(60)
    while b"READY=1" not in notify.recv(4096):
        pass
    notify.close()
    with ControlClient(str(sock), timeout=30) as c:
        url = c.call("status")["links"]["url"]
    return proc, url


def _users(sock: str) -> list[tuple[int, str]]:
    out = []
    with ControlClient(sock, timeout=30) as c:
        channel = c.call("channels.create", {"name": "Bench"})["id"]
        for i in range(USERS):
            out.append(
                (
                    channel,
                    c.call("users.add", {"channel": channel, "email": f"u{i}@bench.test"})[
                        "kuloo_id"
                    ],
                )
            )
    return out


async def _phase(url: str, tokens: list[str]) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    queue = iter(tokens)

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for token in queue:
            t = time.perf_counter()
            r = await http.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
            latencies.append(time.perf_counter() - t)
            failures += r.status_code != 200

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(worker, http)
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, failures


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> dict[str, float]:
    _pin(1)
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kb-"))
    proc, url = _start(root)
    try:
        signer = Signer([KEY.encode()])
        tokens = [
            signer.sign(Claim(Purpose.UNSUBSCRIBE, ch, kid))
            for ch, kid in _users(str(root / "c.sock"))
        ]
        first_rate, first_lat, first_fail = trio.run(_phase, url, tokens)
        again_rate, again_lat, again_fail = trio.run(_phase, url, tokens)
        cpu = os.sched_getaffinity(proc.pid) if hasattr(os, "sched_getaffinity") else "?"
        print(
            f"   daemon on CPU {sorted(cpu) if cpu != '?' else cpu}, {CONCURRENCY} connections, {USERS} users"
        )
        print(
            f"   first unsubscribe (writes): {first_rate:,.0f} POST/s, p50 {_p(first_lat, 0.5):.1f} ms, "
            f"p99 {_p(first_lat, 0.99):.1f} ms, failures {first_fail}"
        )
        print(
            f"   repeated (idempotent):      {again_rate:,.0f} POST/s, p50 {_p(again_lat, 0.5):.1f} ms, "
            f"p99 {_p(again_lat, 0.99):.1f} ms, failures {again_fail}"
        )
        return {
            "one-click POST/s (first, one core)": first_rate,
            "one-click p99 ms (first)": _p(first_lat, 0.99),
            "one-click POST/s (repeat)": again_rate,
            "one-click p99 ms (repeat)": _p(again_lat, 0.99),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
