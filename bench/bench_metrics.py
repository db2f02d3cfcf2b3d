"""Metrics: the cost of one scrape of ``GET /metrics`` with 1,000 channels.

In process, on SQLite: 1,000 channels and 20,000 outbox messages in mixed states, every
channel with a finished sync run and a sent batch counted. A scrape is what the endpoint
does (``operations.metrics.Exporter.render``): read the outbox counts when the 10 s cache
has expired ("cold": one ``GROUP BY`` through the store bridge) or not ("warm"), then render
the exposition in a worker thread. Both with ``[metrics] per_channel`` off (the default:
the series count does not grow with channels) and on (one series per channel and state). HTTP
framing (hypercorn) is left out: it is the same few hundred microseconds whatever the content.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from kuloo_daemon import config as config_mod
from kuloo_daemon.operations.metrics import Exporter
from kuloo_daemon.services import open_services
from kuloo_daemon.vocabulary import SyncRunStatus

CHANNELS = int(os.environ.get("KULOO_BENCH_METRICS_CHANNELS", "1000"))
PER_CHANNEL = 20
STATES = ("sent", "sent", "sent", "queued", "failed", "cancelled", "uncertain")


@dataclass
class Run:  # what sync.finished carries, as far as the metrics read it
    id: int
    channel_id: int
    status: SyncRunStatus


def _fill(db: Path) -> None:
    now = "2026-01-01 00:00:00+00:00"
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO channel (id, name, plan, add_all_users_to_crm, sequential_tags, sender, "
            "postal_address, connection_status, connection_problems, sync_state, sync_status, "
            "created_at, updated_at) VALUES (?, ?, 'pro', 0, '[]', '', '', 'none', '[]', '{}', '', "
            "?, ?)",
            ((i, f"channel {i}", now, now) for i in range(1, CHANNELS + 1)),
        )
        conn.executemany(
            "INSERT INTO outbox_message (channel_id, user_id, kind, state, message_id, attempts, "
            "last_error, created_at, updated_at) VALUES (?, 1, 'sequence', ?, ?, 1, '', ?, ?)",
            (
                (c, STATES[(c + n) % len(STATES)], f"<{c}.{n}@bench>", now, now)
                for c in range(1, CHANNELS + 1)
                for n in range(PER_CHANNEL)
            ),
        )


async def _measure(per_channel: bool) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="km", dir="/tmp"))
    try:
        config = config_mod.from_mapping(
            {
                "daemon": {"state_dir": str(root / "state")},
                "control": {"socket": str(root / "c.sock")},
                "metrics": {"per_channel": per_channel},
            }
        )
        async with open_services(config) as services:
            _fill(root / "state" / "kuloo.sqlite3")
            exporter = Exporter(services)
            metrics = services.metrics
            for cid in range(1, CHANNELS + 1):
                metrics.event("sync.started", Run(cid, cid, SyncRunStatus.RUNNING))
                metrics.event("sync.finished", Run(cid, cid, SyncRunStatus.OK))
                metrics.emails_recorded(cid, 5, 1, 0)
                metrics.sell_request("GET", "200", 0.01, False)
            body = b""

            async def scrape(cold: bool) -> float:
                nonlocal body
                if cold:
                    exporter.outbox_at = -math.inf
                started = time.perf_counter()
                body, _content_type = await exporter.render("")
                return time.perf_counter() - started

            await scrape(True)  # warm up the store's caches and the imports
            cold = [await scrape(True) for _ in range(20)]
            warm = [await scrape(False) for _ in range(50)]
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            mode = "per_channel" if per_channel else "default"
            print(
                f"   {mode:12} {series:6,} samples, {len(body) / 1024:7.1f} KiB: cold scrape "
                f"{1000 * min(cold):.1f} ms (median {1000 * sorted(cold)[10]:.1f}), warm "
                f"{1000 * min(warm):.1f} ms (median {1000 * sorted(warm)[25]:.1f})"
            )
            return {
                f"scrape_ms_cold_{mode}": 1000 * sorted(cold)[10],
                f"scrape_ms_warm_{mode}": 1000 * sorted(warm)[25],
                f"samples_{mode}": float(series),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> dict[str, float]:
    print(f"   {CHANNELS:,} channels, {CHANNELS * PER_CHANNEL:,} outbox messages")
    figures: dict[str, float] = {}
    for per_channel in (False, True):
        figures.update(trio.run(_measure, per_channel))
    return figures


if __name__ == "__main__":
    main()
