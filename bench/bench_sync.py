"""The sync engine against sellsim: requests against the change feed's lower bound, CPU per record.

sellsim runs as its own process (so the CPU measured here is the engine's and the store's,
not the simulator's); the engine runs in-process on a manual clock with the rate budget
lifted (loopback only). Figures (the issue's acceptance):

- initial sync of N Sell leads: reads / the Sync API's lower bound (one start, ⌈k/p⌉
  fetches, the empty pages sellsim serves first, one closing fetch, the acks), writes / N;
- an idle cycle over N linked records: requests (goal ≤ 2);
- cycles with k = 1, 100, 1,000 records changed in Sell: reads / lower bound, and the
  writes made (first names changed in Sell travel to Kuloo only: the needed writes are 0);
- CPU time per synced record during the initial sync, through httpx (goal ≤ 2 ms), with
  its split by thread, and per changed record of the k = 1,000 cycle (no Sell write
  needed);
- polling (the account without the Sync API): reads / ⌈k/100⌉ + 2;
- the process's RSS after a sync with 100,000 more users in the store (goal ≤ 100 MB;
  measured in this process, which runs the engine and the store like the daemon);
- the floor under the CPU figure: one PUT through ``SellClient`` alone (the trio thread's
  CPU), and what the initial sync's trio thread spends beyond it per record.

``KULOO_BENCH_LEADS`` sets N (default 5,000).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import trio

from kuloo_daemon import config as config_mod
from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.sync import connection, engine
from sellsim.seeds import DEMO_TOKEN, default_seed

TAGS = ["welcome", "onboarding", "upsell"]
N = int(os.environ.get("KULOO_BENCH_LEADS", "5000"))
PAGE = 50  # sellsim's sync_page_size default
EMPTY_PAGES = 1  # sellsim's sync_empty_pages default


def sync_bound(k: int, acks: int) -> int:
    """Sync API lower bound for k changed records: start, empty pages, ⌈k/p⌉ fetches, closing fetch, acks."""
    if k == 0:
        return 1
    return 1 + EMPTY_PAGES + math.ceil(k / PAGE) + 1 + acks


class Sim:
    """sellsim as a subprocess, with the few ``/_sim/`` calls the benchmark needs."""

    def __init__(self, seed: dict, root: Path) -> None:
        path = root / "seed.json"
        path.write_text(json.dumps(seed))
        self.proc = subprocess.Popen(
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
        line = self.proc.stdout.readline()
        self.base_url = line.strip().rsplit(" ", 1)[-1]
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    def counters(self) -> dict:
        return self.http.get("/_sim/counters").json()

    def reset_counters(self) -> None:
        self.http.delete("/_sim/counters")

    def edit(self, lead_id: int, changes: dict) -> None:
        self.http.put(f"/_sim/ui/lead/{lead_id}", json=changes).raise_for_status()

    def lead_ids(self) -> list[int]:
        state = self.http.get("/_sim/state").json()
        return [r["id"] for r in state["accounts"][0]["records"]["lead"]]

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)


CADENCE = 300  # seconds: the enterprise plan's, passed on the manual clock before each run


async def cycle(services, cid: int):
    """One scheduled run: the plan's cadence passes first, as it does on the wall clock (a
    frozen clock would make every user look changed since the last run)."""
    await services.clock.advance(CADENCE)
    return await engine.run_channel(services, cid)


def split(counters: dict) -> tuple[int, int]:
    """(reads, writes to leads/contacts) from sellsim's route counters."""
    writes = sum(
        n
        for route, n in counters["routes"].items()
        if route.split()[0] in ("PUT", "POST") and ("/leads" in route or "/contacts" in route)
    )
    return counters["total"] - writes, writes


def acks(counters: dict) -> int:
    return counters["requests"].get("POST /v2/sync/ack", 0)


async def _bench(sim: Sim, root: str) -> dict[str, float]:
    config = config_mod.from_mapping(
        {
            "daemon": {"state_dir": f"{root}/state"},
            "control": {"socket": f"{root}/c.sock"},
            "sell": {"base_url": sim.base_url, "requests_per_second": 10_000, "max_attempts": 3},
            "clock": {"mode": "manual"},
            "log": {"level": "warning"},
        }
    )
    figures: dict[str, float] = {}
    async with open_services(config) as services:
        created = await services.store.run(
            channel_store.create,
            {"name": "bench", "plan": "enterprise", "sequential_tags": TAGS},
            Secret(DEMO_TOKEN),
            services.clock.now(),
        )
        await connection.check_channel(services, created.check)
        cid = created.channel.id

        sim.reset_counters()
        threads = _thread_cpu()
        cpu, wall = time.process_time(), time.perf_counter()
        run = await cycle(services, cid)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        threads = {name: t - threads.get(name, 0.0) for name, t in _thread_cpu().items()}
        c = sim.counters()
        reads, writes = split(c)
        bound = sync_bound(N, acks(c))
        print(
            f"   initial sync of {N:,} leads: {run.status.value}, {reads:,} reads (bound {bound:,}), "
            f"{writes:,} writes, {wall:.1f} s, CPU {cpu * 1000 / N:.3f} ms/record (goal ≤ 2)"
        )
        # Where it goes: the trio thread (engine, feed, HTTP client: one PUT per record here,
        # to write KulooId and Source back) and the store's threads (asyncio + aiosqlite).
        shares = ", ".join(
            f"{name} {t * 1000 / N:.3f}" for name, t in sorted(threads.items()) if t > 0.01
        )
        print(f"   of which, ms/record by thread: {shares}")
        figures[f"initial {N} reads / bound"] = reads / bound
        figures[f"initial {N} writes / N"] = writes / N
        figures["CPU ms per synced record"] = cpu * 1000 / N
        trio_share = threads.get("trio", 0.0) * 1000 / N

        await cycle(services, cid)  # our own writes come back once, with no write
        sim.reset_counters()
        await cycle(services, cid)
        c = sim.counters()
        print(f"   idle cycle over {N:,} linked records: {c['total']} requests")
        figures[f"idle cycle requests ({N} linked)"] = float(c["total"])

        ids = sim.lead_ids()
        for k in (1, 100, 1000):
            k = min(k, len(ids))
            for i, lead_id in enumerate(ids[:k]):
                sim.edit(lead_id, {"first_name": f"K{k}-{i}"})
            sim.reset_counters()
            threads = _thread_cpu()
            cpu = time.process_time()
            run = await cycle(services, cid)
            cpu = time.process_time() - cpu
            threads = {name: t - threads.get(name, 0.0) for name, t in _thread_cpu().items()}
            if k == 1000:  # a cycle that needs no Sell write: the engine's and the store's share
                shares = ", ".join(
                    f"{name} {t * 1000 / k:.3f}" for name, t in sorted(threads.items()) if t > 0.01
                )
                print(
                    f"   k={k} cycle: CPU {cpu * 1000 / k:.3f} ms per changed record (no write needed); "
                    f"by thread: {shares}"
                )
                figures[f"CPU ms per record, k={k} cycle"] = cpu * 1000 / k
            c = sim.counters()
            reads, writes = split(c)
            bound = sync_bound(k, acks(c))
            print(
                f"   k={k:>5} changed in Sell: {reads} reads (bound {bound}), {writes} writes (needed 0), "
                f"{run.counts['users_updated']} users updated"
            )
            figures[f"k={k} reads / bound"] = reads / bound
            figures[f"k={k} writes (needed 0)"] = float(writes)
            await cycle(services, cid)

        # Polling (no Sync API on the account's plan): bound ⌈k/100⌉ + 2.
        account = sim.http.get("/_sim/accounts").json()[0]["id"]
        sim.http.patch(f"/_sim/accounts/{account}", json={"sync_api": False}).raise_for_status()

        # Sell keeps whole seconds: a poll re-reads the records changed in the second it last
        # listed (and the overlap before it) once. Polls come minutes after the edits here
        # too: Sell's clock moves on before each run, as the cadence would move it.
        def later() -> None:
            sim.http.post("/_sim/clock", json={"advance": 5}).raise_for_status()

        later()
        await cycle(services, cid)  # the switch, and the once-a-day reconciliation
        for k in (0, 100, 1000):
            k = min(k, len(ids))
            later()
            for i, lead_id in enumerate(ids[:k]):
                sim.edit(lead_id, {"first_name": f"P{k}-{i}"})
            sim.reset_counters()
            await cycle(services, cid)
            c = sim.counters()
            reads, writes = split(c)
            bound = math.ceil(k / 100) + 2
            print(
                f"   polling, k={k:>5} changed in Sell: {reads} reads (bound {bound}), {writes} writes (needed 0)"
            )
            figures[f"polling k={k} reads / bound"] = reads / bound
            later()
            await cycle(services, cid)

        # Memory with 100,000 users in the store (app-registered, not for the CRM).
        # filled by another process, so the objects made for the insert do not count here
        fill = (
            f"import trio; from bench.bench_sync import fill_store; "
            f"trio.run(fill_store, {str(services.store.db_path)!r}, {cid}, {USERS})"
        )
        await trio.to_thread.run_sync(
            lambda: subprocess.run([sys.executable, "-c", fill], check=True)
        )
        await cycle(services, cid)
        rss = _rss_mb()
        print(f"   RSS after a sync with {USERS:,} more users in the store: {rss:.0f} MB")
        figures[f"RSS MB with {USERS} users"] = rss

        # The floor under the trio share of the initial sync: the same PUTs (KulooId and
        # Source) through SellClient alone, measured on this thread. Last, because these
        # writes come back through the feed.
        sell = await services.sell_pool.client(Secret(DEMO_TOKEN))
        lead = await sell.get_lead(ids[0])
        body = {"custom_fields": {k: lead.custom_fields.get(k) for k in ("KulooId", "Source")}}
        sample = ids[:1000]
        t = time.thread_time()
        for lead_id in sample:
            await sell.update_lead(lead_id, body)
        floor = (time.thread_time() - t) * 1000 / len(sample)
        print(
            f"   one PUT through SellClient alone: {floor:.3f} ms CPU (trio thread); the "
            f"initial sync's trio share beyond it: {trio_share - floor:.3f} ms/record"
        )
        figures["CPU ms per PUT, SellClient alone"] = floor
    return figures


USERS = 100_000


async def _fill(channel_id: int, count: int) -> None:
    from datetime import UTC, datetime

    from tortoise.transactions import in_transaction

    from kuloo_daemon.store.models import User as UserRow

    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        UserRow(
            channel_id=channel_id,
            kuloo_id=f"bench{n:027d}",
            email=f"app{n}@example.net",
            email_key=f"app{n}@example.net",
            created_at=now,
            updated_at=now,
            changed_at={},
            revision=1,
        )
        for n in range(count)
    ]
    async with in_transaction():
        await UserRow.bulk_create(rows, batch_size=2000)


async def fill_store(db_path: str, channel_id: int, count: int) -> None:
    from kuloo_daemon.store.bridge import Store

    async with Store.open(db_path) as store:
        await store.run(_fill, channel_id, count)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread of this process, by role (Linux; empty elsewhere)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    names = {threading.main_thread().native_id: "trio"}
    names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None})
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        name = "trio" if int(tid) == threading.main_thread().native_id else name
        name = "aiosqlite" if "connection_worker" in name else name
        out[name] = out.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="kb-") as root:
        sim = Sim(default_seed(leads=N), Path(root))
        try:
            return trio.run(_bench, sim, root)
        finally:
            sim.close()


if __name__ == "__main__":
    main()
