"""Sell's hourly lockout (sellsim ``rate_window="hourly_lockout"``), the engine in process
(issue 23.3): past the hour's budget every request is 429 until the clock hour turns, and
Sell sends no Retry-After.

A request still 429 after its retries ends the run ``partial``, reason ``rate_limited``,
with ``retry_at`` the next whole hour of business time (shown by ``sync.runs`` and the
TUI); a run before then makes ONE probe request and ends at once if it is still refused;
the next run picks up where the first stopped (nothing imported twice, every record
linked in the end)."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta

import pytest

from kuloo_daemon.control import render
from kuloo_daemon.rules import schedule
from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.sync import errors as sync_errors
from kuloo_daemon.store.sync import runs as sync_runs
from kuloo_daemon.sync import connection, engine
from kuloo_daemon.vocabulary import SyncRunStatus
from kuloo_tui.screens.sync import run_status
from sellsim.seeds import DEMO_TOKEN, default_seed

TAGS = ["welcome", "onboarding", "upsell"]
ATTEMPTS = 3


def _sell_seconds(sim) -> int:
    return calendar.timegm(time.strptime(sim.advance_clock(0), "%Y-%m-%dT%H:%M:%SZ"))


def _requests(sim) -> tuple[int, int]:
    stats = sim.counters()["tokens"].get(sim.token_name, {})
    return stats.get("requests", 0), stats.get("rate_limited", 0)


def test_retry_at_is_the_next_whole_hour():
    """Planted bugs: the hour not rounded (now + 1 h); an earlier promise dropped."""
    now = datetime(2026, 12, 7, 13, 59, 59, 500000, tzinfo=UTC)
    assert schedule.rate_limit_retry_at(now) == datetime(2026, 12, 7, 14, tzinfo=UTC)
    assert schedule.rate_limit_retry_at(now.replace(minute=0, second=0, microsecond=0)) == datetime(
        2026, 12, 7, 14, tzinfo=UTC
    )
    later = datetime(2026, 12, 7, 15, tzinfo=UTC)
    assert schedule.rate_limit_retry_at(now, later) == later


@pytest.mark.parametrize("sync_api", [True, False], ids=["sync_api", "polling"])
async def test_a_lockout_ends_the_run_partial_then_one_probe_then_the_next_run_resumes(
    services_config, sellsim, sync_api
):
    """Planted bugs (each failed this test): RateLimitedError left to the generic handler (a
    ``failed`` run, no retry_at); the probe skipped (the second run hammers: ATTEMPTS
    requests); the probe retried like any request; retry_at not carried into the next run."""
    sellsim.load_seed(default_seed(leads=24))
    # Sell's clock 10 minutes into an hour, so the hour turns only when the test says so
    sellsim.advance_clock(600 - _sell_seconds(sellsim) % 3600)
    sellsim.set_options(rate_window="hourly_lockout", rate_per_hour=10**9, sync_page_size=10)
    if not sync_api:  # the change feed polls the lists instead
        sellsim.set_account(sync_api=False)
    config = services_config(
        sell={"base_url": sellsim.base_url, "requests_per_second": 2000, "max_attempts": ATTEMPTS},
        clock={"mode": "manual"},
    )
    async with open_services(config) as services:
        hour = schedule.rate_limit_retry_at(services.clock.now())  # a whole hour ahead
        await services.clock.set(hour + timedelta(minutes=20))
        retry_at = hour + timedelta(hours=1)
        created = await services.store.run(
            channel_store.create,
            {"name": "A", "plan": "pro", "sequential_tags": TAGS},
            Secret(DEMO_TOKEN),
            services.clock.now(),
        )
        await connection.check_channel(services, created.check)
        cid = created.channel.id
        used, _ = _requests(sellsim)
        sellsim.set_options(rate_per_hour=used + 16)  # the hour's budget runs out mid-run

        first = await engine.run_channel(services, cid)
        assert (first.status.value, first.reason) == ("partial", "rate_limited"), first
        assert first.retry_at == retry_at
        assert retry_at.isoformat() in first.error
        shown = render.sync_run(first)
        text = retry_at.strftime("%Y-%m-%dT%H:%M:%S")
        assert shown["retry_at"] == text + "Z" and shown["reason"] == "rate_limited"
        shown_at = text[:16].replace("T", " ")
        assert run_status(shown) == f"partial (rate_limited, retry at {shown_at})"
        total, limited = _requests(sellsim)
        assert limited == ATTEMPTS  # one request's retries, then the run stopped
        imported = (
            await services.store.run(user_store.list_page, cid, user_store.Filters(), None, 500)
        ).total
        assert 0 <= imported <= 24  # polling reads all 24 in one page; the writes are cut short

        # Before retry_at, Sell still refusing: ONE request, the run ends at once.
        await services.clock.advance(20 * 60)
        second = await engine.run_channel(services, cid)
        assert (second.status.value, second.reason) == ("partial", "rate_limited"), second
        assert second.retry_at == first.retry_at and second.counts["requests"] == 1
        assert _requests(sellsim) == (total + 1, limited + 1)
        runs = await services.store.run(sync_runs.runs, cid, 5)
        assert [r.retry_at for r in runs[:2]] == [first.retry_at] * 2

        # Sell's hour turns (its clock, not ours): the probe passes and the run goes on, until
        # the new hour's budget is spent too; each later hour takes it further.
        sellsim.advance_clock(3000)
        third = await engine.run_channel(services, cid)
        assert third.counts["requests"] > 2 and third.retry_at in (None, first.retry_at), third
        created_total = imported + third.counts["users_created"]
        run = third
        for _hour in range(10):
            if run.status.value == "ok":
                break
            assert run.reason == "rate_limited", run
            sellsim.advance_clock(3600)
            await services.clock.advance(3600)
            run = await engine.run_channel(services, cid)
            created_total += run.counts["users_created"]
        assert run.status.value == "ok" and run.retry_at is None, run
        assert created_total == 24  # each run picked up where the last one stopped
        page = await services.store.run(user_store.list_page, cid, user_store.Filters(), None, 500)
        assert page.total == 24 and all(u.crm is not None for u in page.users)
        leads = sellsim.records("lead")
        assert len(leads) == 24 and all((r["custom_fields"] or {}).get("KulooId") for r in leads)
        assert len({r["custom_fields"]["KulooId"] for r in leads}) == 24
        sellsim.set_options(rate_per_hour=10**9)

        # retry_at passed: no probe, and the next run is idle
        await services.clock.advance(3600)
        sellsim.reset_counters()
        fourth = await engine.run_channel(services, cid)
        assert fourth.status.value == "ok" and fourth.counts["sell_updated"] == 0, fourth
        assert "GET /v2/users/self" not in sellsim.counters()["requests"]
        assert (await services.store.run(sync_errors.errors, cid, None, 10))[0] == []


async def test_a_probe_that_passes_runs_the_sync_at_once(services_config, sellsim):
    """Before retry_at, a probe that Sell answers (its window reset early, another client
    stopped): the run goes on as usual and clears retry_at. Planted bug: a run before
    retry_at skipped without asking Sell."""
    sellsim.load_seed(default_seed(leads=3))
    sellsim.set_options(rate_per_second=5000, rate_per_hour=10**9)
    config = services_config(
        sell={"base_url": sellsim.base_url, "requests_per_second": 2000}, clock={"mode": "manual"}
    )
    async with open_services(config) as services:
        created = await services.store.run(
            channel_store.create,
            {"name": "A", "plan": "pro", "sequential_tags": TAGS},
            Secret(DEMO_TOKEN),
            services.clock.now(),
        )
        await connection.check_channel(services, created.check)
        cid = created.channel.id
        now = services.clock.now()
        start = await services.store.run(sync_runs.begin_run, cid, now)
        await services.store.run(
            sync_runs.finish_run,
            start.run.id,
            SyncRunStatus.PARTIAL,
            "rate_limited",
            "429",
            {},
            None,
            now,
            now + timedelta(minutes=30),
        )
        sellsim.reset_counters()
        run = await engine.run_channel(services, cid)
        assert run.status.value == "ok" and run.retry_at is None
        assert run.counts["users_created"] == 3
        assert sellsim.counters()["requests"]["GET /v2/users/self"] == 1
