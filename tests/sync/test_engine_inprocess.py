"""The engine in-process (open_services + sellsim over loopback): quick checks of one run,
on SQLite and on PostgreSQL (``backend``)."""

from __future__ import annotations

import trio

from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import sync_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.sync import connection, engine
from sellsim.seeds import DEMO_TOKEN, default_seed

TAGS = ["welcome", "onboarding", "upsell"]


async def test_initial_sync_imports_every_lead_and_a_second_run_is_idle(services_config, sellsim, backend):
    sellsim.load_seed(default_seed(leads=30, contacts=5))
    sellsim.set_options(rate_per_second=5000, rate_per_hour=10**9)
    config = services_config(sell={"base_url": sellsim.base_url, "requests_per_second": 2000},
                             clock={"mode": "manual"}, store=backend.store_section())
    events = []
    async with open_services(config, lambda e, d: events.append((e, d))) as services:
        now = services.clock.now()
        created = await services.store.run(channel_store.create, {"name": "A", "plan": "pro", "sequential_tags": TAGS},
                                           Secret(DEMO_TOKEN), now)
        await connection.check_channel(services, created.check)
        cid = created.channel.id
        pushed = await services.store.run(user_store.add, cid, {"email": "push@example.net", "last_name": "P",
                                                                "add_to_crm": True}, "admin", now)
        run = await engine.run_channel(services, cid)
        assert run.status.value == "ok", run
        assert run.counts["users_created"] == 35 and run.counts["leads_created"] == 1
        assert run.counts["sell_updated"] == 35
        leads = await trio.to_thread.run_sync(sellsim.records, "lead")
        assert all((r["custom_fields"] or {}).get("KulooId") for r in leads)
        assert len(leads) == 31
        page = await services.store.run(user_store.list_page, cid, user_store.Filters(), None, 500)
        assert page.total == 36 and all(u.crm is not None for u in page.users)
        assert (await services.store.run(user_store.get, pushed.id)).crm.kind == "lead"
        names = [e for e, _ in events]
        assert names[0] == "sync.started" and names[-1] == "sync.finished" and "users.changed" in names
        assert names.count("users.changed") <= 4  # batched, not one per user

        await engine.run_channel(services, cid)  # our own writes come back: no write answers them
        await trio.to_thread.run_sync(sellsim.reset_counters)
        run = await engine.run_channel(services, cid)
        counters = await trio.to_thread.run_sync(sellsim.counters)
        assert run.counts["sell_updated"] == 0 and run.counts["requests"] <= 2, (run, counters["requests"])
        assert (await services.store.run(sync_store.errors, cid, None, 10))[0] == []


async def test_the_lookup_before_a_second_post_finds_the_record_by_kulooid_then_email(services_config, sellsim, backend):
    from kuloo_daemon.store.sync_store import PushIn

    sellsim.set_options(rate_per_second=5000, rate_per_hour=10**9)
    config = services_config(sell={"base_url": sellsim.base_url, "requests_per_second": 2000},
                             clock={"mode": "manual"}, store=backend.store_section())
    async with open_services(config) as services:
        now = services.clock.now()
        created = await services.store.run(channel_store.create, {"name": "A", "plan": "pro", "sequential_tags": TAGS},
                                           Secret(DEMO_TOKEN), now)
        await connection.check_channel(services, created.check)
        start = await services.store.run(sync_store.begin_run, created.channel.id, now)
        sell = await services.sell_pool.client(Secret(DEMO_TOKEN))
        run = engine._Run(services, start, sell)

        def push(kuloo_id, email):
            return PushIn(1, kuloo_id, email, {}, (), True)

        lead = await trio.to_thread.run_sync(sellsim.create_record, "lead", {
            "last_name": "A", "email": "other@example.com", "custom_fields": {"KulooId": "k-lead"}})
        contact = await trio.to_thread.run_sync(sellsim.create_record, "contact", {
            "last_name": "B", "email": "b@example.com", "custom_fields": {"KulooId": "k-contact"}})
        by_email = await trio.to_thread.run_sync(sellsim.create_record, "lead", {
            "last_name": "C", "email": "c@example.com"})
        foreign = await trio.to_thread.run_sync(sellsim.create_record, "lead", {
            "last_name": "D", "email": "d@example.com", "custom_fields": {"KulooId": "someone-else"}})
        assert (await run.find(push("k-lead", "x@example.com")))[:2] == ("lead", lead["id"])
        assert (await run.find(push("k-contact", "x@example.com")))[:2] == ("contact", contact["id"])
        assert (await run.find(push("k-new", "c@example.com")))[:2] == ("lead", by_email["id"])
        assert await run.find(push("k-new", "d@example.com")) is None  # another user's record
        assert await run.find(push("k-new", "nobody@example.com")) is None
        assert foreign["id"]
