"""sellsim's request rate over loopback for simple GETs (must stay >= 1,000 req/s).

Starts ``kuloo-sell-sim`` as a subprocess (its own process, so the client does not share its
GIL) with the rate limit raised, then drives it from httpx clients over keep-alive connections:
one sequential client, then several client threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from sellsim.seeds import DEMO_TOKEN

SECONDS = 3.0
REQUIRED = 1000.0


def _drive(base_url: str, path: str, seconds: float, out: list[int]) -> None:
    headers = {
        "Authorization": f"Bearer {DEMO_TOKEN}",
        "User-Agent": "bench/1",
        "Accept": "application/json",
    }
    n = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            r = client.get(path)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
            n += 1
    out.append(n)


def _rate(base_url: str, path: str, threads: int) -> float:
    counts: list[int] = []
    workers = [
        threading.Thread(target=_drive, args=(base_url, path, SECONDS, counts))
        for _ in range(threads)
    ]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    if len(counts) != threads:
        raise RuntimeError("a benchmark client failed")
    return sum(counts) / elapsed


def main() -> dict[str, float]:
    seed = Path(__file__).resolve().parent.parent / "config" / "sellsim-demo.json"
    cmd = [
        sys.executable,
        "-m",
        "sellsim",
        "--port",
        "0",
        "--seed",
        str(seed),
        "-o",
        "rate_per_second=1000000000",
        "-o",
        "rate_per_hour=1000000000000",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        base_url = line.rsplit(" ", 1)[-1]
        if not base_url.startswith("http://"):
            raise RuntimeError(f"unexpected first line from kuloo-sell-sim: {line!r}")
        _rate(base_url, "/v2/users/self", 1)  # warm up
        figures = {
            "GET /v2/users/self, 1 client (req/s)": _rate(base_url, "/v2/users/self", 1),
            "GET /v2/users/self, 4 clients (req/s)": _rate(base_url, "/v2/users/self", 4),
            "GET /v2/leads?per_page=25, 1 client (req/s)": _rate(
                base_url, "/v2/leads?per_page=25", 1
            ),
        }
    finally:
        proc.terminate()
        proc.wait(10)
    for key, value in figures.items():
        print(f"   {key}: {value:,.0f}")
    best = figures["GET /v2/users/self, 1 client (req/s)"]
    print(f"   ratio to the required {REQUIRED:,.0f} req/s: {best / REQUIRED:.1f}x", flush=True)
    if best < REQUIRED:
        raise RuntimeError(f"sellsim serves {best:,.0f} req/s, below {REQUIRED:,.0f}")
    return figures
