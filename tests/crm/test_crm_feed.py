"""ChangeFeed against sellsim: Sync API with ack-after-apply, and the polling fallback."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from kuloo_daemon.crm import errors as E
from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.crm.feed import (
    ChangeFeed,
    RecordChanged,
    RecordDeleted,
    new_state,
    poll_advance,
    poll_select,
)
from kuloo_daemon.crm.records import Lead
from kuloo_daemon.secrets import Secret
from sellsim.seeds import default_seed


def client(sim) -> SellClient:
    return SellClient(
        sim.base_url,
        Secret(sim.token),
        budget=RateBudget(500.0),
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=2.0,
    )


async def run(feed: ChangeFeed, state, **kw):
    """Apply every batch (i.e. resume), return (changes, final state)."""
    changes = []
    final = None
    async with contextlib.aclosing(feed.batches(state, **kw)) as batches:
        async for batch in batches:
            changes.extend(batch.changes)
            json.dumps(batch.state)  # plain JSON-able
            final = batch
    assert final is not None and final.final
    return changes, final.state


def summary(changes):
    return sorted((type(c).__name__, c.kind, c.id) for c in changes)


async def to_thread(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def without_sync_api(sellsim, seed) -> None:
    """An account whose plan has no Sync API: the feed polls."""
    await to_thread(sellsim.load_seed, seed)
    sellsim.set_options(rate_per_second=1000)
    sellsim.set_account(sync_api=False)


async def edited_then_delivered_once(
    sellsim, feed: ChangeFeed, state, lead_id: int, first_name: str
):
    """A lead edited in Sell comes with the next poll, and not with the one after."""
    await to_thread(sellsim.edit_record, "lead", lead_id, {"first_name": first_name})
    news, state = await run(feed, state)
    assert [(c.kind, c.id) for c in news] == [("lead", lead_id)]
    assert news[0].record.first_name == first_name
    none, state = await run(feed, state)
    assert none == []
    return state


async def test_sync_mode_delivers_acks_after_apply_and_redelivers_after_a_crash(
    sellsim, sell_options
):
    await to_thread(sellsim.load_seed, default_seed(leads=7, contacts=3))
    sellsim.set_options(rate_per_second=1000, sync_page_size=4)
    state = new_state()
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell)
        # Crash after receiving the first batch, before applying it: nothing acked.
        async with contextlib.aclosing(feed.batches(state)) as batches:
            first = await batches.__anext__()
        assert first.mode == "sync" and first.changes
        assert sellsim.counters()["routes"].get("POST ack", 0) == 0
        changes, state = await run(feed, state)
        kinds = summary(changes)
        assert sum(1 for k in kinds if k[1] == "lead") == 7
        assert sum(1 for k in kinds if k[1] == "contact") == 3
        assert all(isinstance(c, RecordChanged) for c in changes)
        assert {c.record.id for c in first.changes} <= {c.record.id for c in changes}  # redelivered
        # Nothing new: a single empty final batch.
        again, state = await run(feed, state)
        assert again == []
        # Edits in Sell: one lead changed, one deleted, one converted.
        leads = sorted(c.record.id for c in changes if c.kind == "lead")
        await to_thread(sellsim.edit_record, "lead", leads[0], {"first_name": "Changed"})
        await to_thread(sellsim.delete_record, "lead", leads[1])
        conv = await to_thread(sellsim.convert_lead, leads[2])
        news, state = await run(feed, state)
    got = summary(news)
    assert ("RecordChanged", "lead", leads[0]) in got
    assert ("RecordDeleted", "lead", leads[1]) in got
    assert ("RecordDeleted", "lead", leads[2]) in got
    assert ("RecordChanged", "contact", conv["individual_id"]) in got
    changed = next(c for c in news if c.kind == "lead" and isinstance(c, RecordChanged))
    assert isinstance(changed.record, Lead) and changed.record.first_name == "Changed"
    assert state["mode"] == "sync" and state["device_uuid"]


async def test_falls_back_to_polling_on_403_and_keeps_a_watermark(sellsim, sell_options):
    await without_sync_api(sellsim, default_seed(leads=5, contacts=2))
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell, per_page=2)
        changes, state = await run(feed, None)
        assert state["mode"] == "poll" and "403" in state["sync_unavailable"]
        assert len([c for c in changes if c.kind == "lead"]) == 5
        assert len([c for c in changes if c.kind == "contact"]) == 2
        assert state["watermarks"]["lead"] and state["watermarks"]["contact"]
        starts = sellsim.counters()["routes"].get("POST start", 0)
        # Nothing changed: the overlap re-reads the boundary second but delivers nothing.
        again, state = await run(feed, state)
        assert again == []
        assert sellsim.counters()["routes"].get("POST start", 0) == starts  # not re-probed
        # One edit, in the same second as the watermark or later: delivered exactly once.
        lead_id = next(c.id for c in changes if c.kind == "lead")
        state = await edited_then_delivered_once(sellsim, feed, state, lead_id, "Polled")
        # Deletes are seen through reconciliation, confirmed by an ids= query.
        await to_thread(sellsim.delete_record, "lead", lead_id)
        known = {
            "lead": [c.id for c in changes if c.kind == "lead"],
            "contact": [c.id for c in changes if c.kind == "contact"],
        }
        gone, state = await run(feed, state, known_ids=known)
    assert gone == [RecordDeleted("lead", lead_id)]


async def test_poll_rereads_a_burst_of_same_second_changes_once_not_every_time(
    sellsim, sell_options
):
    """The bench's ⌈k/100⌉ + 2: a poll that finds nothing reads one page per kind, even when
    many records share the newest second (planted bug: the boundary taken from the newest
    record instead of Sell's clock at the last listing — every poll pages through them)."""
    await without_sync_api(sellsim, default_seed(leads=7, contacts=1))
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell, per_page=2)
        changes, state = await run(feed, None)
        assert len([c for c in changes if c.kind == "lead"]) == 7
        await to_thread(sellsim.advance_clock, 5)
        await run(feed, state)  # a pass seconds after the burst: its listing time is the boundary
        _, state = await run(feed, state)
        assert (
            state["listed_at"]["lead"] and state["listed_at"]["lead"] > state["watermarks"]["lead"]
        )
        await to_thread(sellsim.advance_clock, 5)
        await to_thread(sellsim.reset_counters)
        again, state = await run(feed, state)
        assert again == []
        requests = sellsim.counters()["requests"]
        assert requests == {"GET /v2/leads": 1, "GET /v2/contacts": 1}  # one page of each
        # A change after the listing is still delivered, once.
        await edited_then_delivered_once(
            sellsim, feed, state, next(c.id for c in changes if c.kind == "lead"), "Later"
        )


async def test_poll_watermark_not_advanced_until_the_pass_completes(sellsim, sell_options):
    await to_thread(sellsim.load_seed, default_seed(leads=6))
    sellsim.set_options(rate_per_second=1000)
    sellsim.set_account(sync_api=False)
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell, per_page=2)
        async with contextlib.aclosing(feed.batches(None)) as batches:
            first = await batches.__anext__()
        assert len(first.changes) == 2
        assert first.state["watermarks"]["lead"] is None  # persisting it loses nothing
        changes, _ = await run(feed, first.state)
    assert len([c for c in changes if c.kind == "lead"]) == 6


# ------------------------------------------------------------------ pure watermark logic


def lead(i: int, ts: str, **extra) -> Lead:
    return Lead.from_data({"id": i, "updated_at": ts, **extra})


def test_poll_select_and_advance_handle_same_second_ties():
    wm = "2026-03-01T10:00:05Z"
    delivered = [lead(1, wm)]
    new_wm, seen = poll_advance(None, [], delivered, overlap=1.0)
    assert new_wm == wm and len(seen) == 1
    # Another record lands in the very same second after our read: it is news, lead 1 is not.
    page = [
        lead(2, wm),
        lead(1, wm),
        lead(3, "2026-03-01T10:00:04Z"),
        lead(4, "2026-03-01T09:00:00Z"),
    ]
    step = poll_select(page, new_wm, seen, overlap=1.0)
    assert [r.id for r in step.emit] == [2, 3] and step.reached_end
    # Lead 1 changed again within the same second: different content, delivered again.
    step = poll_select([lead(1, wm, first_name="new")], new_wm, seen, overlap=1.0)
    assert [r.id for r in step.emit] == [1]
    # The watermark never moves back; old fingerprints leave the window.
    wm2, seen2 = poll_advance(new_wm, seen, [lead(5, "2026-03-01T10:00:09Z")], overlap=1.0)
    assert wm2 == "2026-03-01T10:00:09Z" and len(seen2) == 1
    assert poll_advance(wm2, seen2, [lead(6, "2026-03-01T10:00:01Z")], overlap=1.0)[0] == wm2


# ------------------------------------------------------------------ failures mid-run


async def test_a_failing_ack_loses_nothing_and_a_later_403_does_not_switch_modes(
    sellsim, sell_options
):
    await to_thread(sellsim.load_seed, default_seed(leads=6, contacts=0))
    sellsim.set_options(rate_per_second=1000, sync_page_size=3, sync_include_users=False)
    state = new_state()
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell)
        # Every ack fails (after the client's retries): the run raises, nothing was acked.
        sellsim.set_faults([{"kind": "500", "path": "/v2/sync/ack"}])
        applied = []
        with pytest.raises(E.ServerError):
            async with contextlib.aclosing(feed.batches(state)) as batches:
                async for batch in batches:
                    applied.extend(batch.changes)
        assert len(applied) == 3  # the first batch was applied, its ack failed
        sellsim.clear_faults()
        changes, state = await run(feed, state)
        assert len(changes) == 6  # everything again, the first batch included
        # A 403 in the middle of a session is an error, not "no Sync API".
        await to_thread(sellsim.edit_record, "lead", changes[0].id, {"first_name": "A"})
        await to_thread(sellsim.edit_record, "lead", changes[1].id, {"first_name": "B"})
        sellsim.set_options(sync_page_size=1)
        async with contextlib.aclosing(feed.batches(state)) as batches:
            first = await batches.__anext__()
            sellsim.set_account(sync_api=False)
            with pytest.raises(E.ForbiddenError):
                await batches.__anext__()
    assert first.state["mode"] == "sync" and first.state["sync_unavailable"] is None


async def test_unreadable_sync_items_are_not_acked():
    acked: list[list[str]] = []
    pages = [
        [
            {
                "data": {"id": 1, "last_name": "A"},
                "meta": {"type": "lead", "sync": {"event_type": "updated", "ack_key": "Lead-1-2"}},
            },
            {
                "data": {"id": 2, "custom_fields": "garbage"},
                "meta": {"type": "lead", "sync": {"event_type": "updated", "ack_key": "Lead-2-2"}},
            },
            {
                "data": {"id": "x"},
                "meta": {
                    "type": "contact",
                    "sync": {"event_type": "deleted", "ack_key": "Contact-x-3"},
                },
            },
            {
                "data": {"id": 9},
                "meta": {"type": "user", "sync": {"event_type": "updated", "ack_key": "User-9-1"}},
            },
        ]
    ]

    def handler(request: httpx.Request):
        if request.url.path == "/v2/sync/start":
            return httpx.Response(201, json={"data": {"id": "s1", "queues": []}})
        if request.url.path == "/v2/sync/ack":
            acked.append(json.loads(request.content)["data"]["ack_keys"])
            return httpx.Response(202)
        if pages:
            return httpx.Response(200, json={"items": pages.pop(0)})
        return httpx.Response(204)

    sell = SellClient(
        "https://sell.test",
        Secret("t" * 64),
        budget=RateBudget(1000.0),
        transport=httpx.MockTransport(handler),
    )
    with capture_logs() as logs:
        async with sell:
            changes, _ = await run(ChangeFeed(sell), None)
    assert [(c.kind, c.id) for c in changes] == [("lead", 1)]
    assert acked == [["Lead-1-2", "User-9-1"]]
    assert [e["ack_key"] for e in logs if e["event"] == "feed item unreadable"] == [
        "Lead-2-2",
        "Contact-x-3",
    ]


async def test_types_the_feed_does_not_sync_are_acked_so_they_stop_coming(sellsim, sell_options):
    """Deals, tasks, notes and users are in every session until acked (sync_other_types)."""
    await to_thread(sellsim.load_seed, default_seed(leads=2))
    sellsim.set_options(rate_per_second=1000, sync_page_size=2)
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell)
        changes, state = await run(feed, new_state())
        assert sorted(c.kind for c in changes) == ["lead", "lead"]
        assert await sell.sync_start(state["device_uuid"]) is None  # 204: nothing left un-acked


async def test_a_put_that_changes_nothing_is_delivered_only_if_sell_bumps_it(sellsim, sell_options):
    """The sync engine must suppress its own echoes by content: Sell may report a no-op PUT
    as a change (noop_write_bumps, default true)."""
    await to_thread(sellsim.load_seed, default_seed(leads=1))
    sellsim.set_options(rate_per_second=1000)
    async with client(sellsim) as sell:
        feed = ChangeFeed(sell)
        changes, state = await run(feed, new_state())
        (before,) = [c.record for c in changes if c.kind == "lead"]
        await sell.update_lead(before.id, {"last_name": before.last_name})
        news, state = await run(feed, state)
    bumps = sell_options.get("noop_write_bumps", True)
    assert [c.id for c in news] == ([before.id] if bumps else [])
    if bumps:  # same content, a new updated_at at most
        echo = news[0].record
        assert {k: v for k, v in echo.raw.items() if k != "updated_at"} == {
            k: v for k, v in before.raw.items() if k != "updated_at"
        }
