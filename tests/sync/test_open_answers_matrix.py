"""The sync across the open answers (issue 23): one small world per value of every sellsim
option marked [I] or [T] in ``sellsim/options.py`` (one option at a time, not the product),
the engine in process against the suite's sellsim.

In each world: Sell has a few leads and contacts (one an organization lead), Kuloo one user
to push; a first sync; then a Sell user edits a lead's dropdown and multi-select, adds a
lead and converts one, while an admin changes a user; a settling run; then two more runs
must write nothing to Sell (no POST/PUT/DELETE of a record), raise no sync error, and leave
every user equal to its Sell record — values compared as values, by this test's own reading
(a date is a date however spelled; a dropdown is its name, a multi-select a set of names).

The worlds share one migrated SQLite file (copied per world) so that together they stay
within 90 s on this machine; sellsim's request limits are raised except in the world that
sets them (``rate_per_second=10``: the daemon's fast budget meets real 429s there).
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, date, datetime
from typing import Any

import pytest
import trio

from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.bridge import migrate_blocking
from kuloo_daemon.store.sync import errors as sync_errors
from kuloo_daemon.sync import connection, engine
from sellsim.options import Options, open_answers
from sellsim.seeds import DEMO_TOKEN, default_seed

TAGS = ["welcome", "onboarding", "upsell"]
BASE = {"rate_per_second": 100_000, "rate_per_hour": 10**9}  # loopback: no limit but the world's


def _worlds() -> list[Any]:
    """Every [I]/[T] value as a world; a value equal to the base (sellsim's default, or
    ``BASE``) is the one "defaults" world."""
    base = Options()
    worlds = [pytest.param({}, id="defaults")]
    for name, value in open_answers():
        if value != BASE.get(name, getattr(base, name)):
            worlds.append(pytest.param({name: value}, id=f"{name}={value}"))
    return worlds


WORLDS = _worlds()
WRITES = re.compile(r"^(POST|PUT|DELETE|PATCH) /v2/(leads|contacts|lead_conversions)")


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Any:
    path = tmp_path_factory.mktemp("matrix") / "kuloo.sqlite3"
    migrate_blocking(path)
    return path


# --------------------------------------------------------------- the test's own reading of Sell


def _name(v: Any) -> Any:
    return v.get("name") if isinstance(v, dict) else v


def _date(v: Any) -> date | None:
    if not v:
        return None
    text = str(v).strip()
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
    if m:
        return date(int(m[3]), int(m[1]), int(m[2]))
    return date.fromisoformat(text[:10])


def sell_view(record: dict[str, Any]) -> dict[str, Any]:
    cf = record.get("custom_fields") or {}
    return {
        "email": (record.get("email") or "").strip().lower(),
        "first_name": record.get("first_name") or "",
        "last_name": record.get("last_name") or "",
        "kuloo_id": cf.get("KulooId") or "",
        "subscription": _name(cf.get("Subscription")) or None,
        "source": _name(cf.get("Source")) or "",
        "promo": frozenset(_name(p) for p in cf.get("Promo") or []),
        "last_active": _date(cf.get("Last active")),
        "sync_error": cf.get("Sync error") or "",
    }


def user_view(u: user_store.User) -> dict[str, Any]:
    subscription = (
        "unsubscribed"
        if u.unsubscribed
        else (None if u.frequency.value == "disabled" else u.frequency.value)
    )
    last = u.last_active
    return {
        "email": u.email.strip().lower(),
        "first_name": u.first_name,
        "last_name": u.last_name,
        "kuloo_id": u.kuloo_id,
        "subscription": subscription,
        "source": u.source.value,
        "promo": frozenset(u.promo_tags),
        "last_active": last.astimezone(UTC).date() if isinstance(last, datetime) else last,
        "sync_error": u.sync_error,
    }


def read_through_api(sim) -> dict[tuple[str, int], dict[str, Any]]:
    """Every lead and contact as the Sell API reads it back in this world (dates, dropdowns
    and multi-selects in the world's read format), by (kind, id)."""
    sim.set_options(**BASE)  # this read is the test's, not the daemon's: no limit in the way
    out = {}
    with sim.client() as api:
        for kind in ("lead", "contact"):
            r = api.get(f"/v2/{kind}s", params={"per_page": 100})
            assert r.status_code == 200, r.text
            out.update({(kind, i["data"]["id"]): i["data"] for i in r.json()["items"]})
    return out


def test_the_test_reads_values_as_values():
    """This test's own reading: a dropdown object is its name, a date any spelling."""
    spelled = [
        {"Subscription": "weekly", "Promo": ["a", "b"], "Last active": "2016-04-27"},
        {
            "Subscription": {"id": 1, "name": "weekly"},
            "Promo": [{"id": 2, "name": "b"}, "a"],
            "Last active": "4/27/2016",
        },
        {"Subscription": "weekly", "Promo": ["b", "a"], "Last active": "2016-04-27T00:00:00Z"},
    ]
    views = [sell_view({"custom_fields": cf}) for cf in spelled]
    assert views[0] == views[1] == views[2] and views[0]["last_active"] == date(2016, 4, 27)
    assert sell_view({"custom_fields": {"Subscription": "daily"}}) != views[0]


# ----------------------------------------------------------------------------- the world


async def _run(services, cid: int) -> Any:
    run = await engine.run_channel(services, cid)
    assert run.status.value == "ok", run
    return run


@pytest.mark.parametrize("options", WORLDS)
async def test_the_sync_settles_under_every_open_answer(
    options, services_config, sellsim, migrated_db, short_tmp
):
    sellsim.load_seed(default_seed(leads=4, contacts=2))
    sellsim.set_options(**{**BASE, **options})
    config = services_config(
        sell={"base_url": sellsim.base_url, "requests_per_second": 2000, "max_attempts": 8},
        clock={"mode": "manual"},
    )
    config.state_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_db, config.database_path)
    async with open_services(config) as services:
        now = services.clock.now()
        created = await services.store.run(
            channel_store.create,
            {"name": "A", "plan": "pro", "sequential_tags": TAGS},
            Secret(DEMO_TOKEN),
            now,
        )
        await connection.check_channel(services, created.check)
        cid = created.channel.id
        pushed = await services.store.run(
            user_store.add,
            cid,
            {
                "email": "Push.Me@Example.net",
                "first_name": "Pia",
                "last_name": "Push",
                "add_to_crm": True,
                "promo_tags": ["welcome", "upsell"],
                "frequency": "weekly",
            },
            "admin",
            now,
        )
        await _run(services, cid)  # the first sync

        # A Sell user edits, adds and converts; an admin edits a user.
        leads = sorted(sellsim.records("lead"), key=lambda r: r["id"])
        person = [r for r in leads if r.get("last_name") and not r.get("organization_name")]
        await trio.to_thread.run_sync(
            lambda: sellsim.edit_record(
                "lead",
                person[0]["id"],
                {"custom_fields": {"Subscription": "monthly", "Promo": ["onboarding", "welcome"]}},
            )
        )
        await trio.to_thread.run_sync(
            lambda: sellsim.create_record(
                "lead",
                {
                    "first_name": "New",
                    "last_name": "Lead",
                    "email": "New.Lead@Example.com",
                    "custom_fields": {"Subscription": "daily", "Promo": ["upsell"]},
                },
            )
        )
        await trio.to_thread.run_sync(lambda: sellsim.convert_lead(person[1]["id"]))
        await services.store.run(
            user_store.update, pushed.id, {"frequency": "monthly"}, "admin", services.clock.now()
        )
        await _run(services, cid)  # the settling run

        sellsim.reset_counters()
        for _ in range(2):
            run = await _run(services, cid)
            assert run.counts["sell_updated"] == 0 and run.counts["leads_created"] == 0, run
        writes = {k: n for k, n in sellsim.counters()["requests"].items() if WRITES.match(k)}
        assert writes == {}, writes
        assert (await services.store.run(sync_errors.errors, cid, None, 100))[0] == []

        users = (
            await services.store.run(user_store.list_page, cid, user_store.Filters(), None, 500)
        ).users
        records = await trio.to_thread.run_sync(read_through_api, sellsim)
        assert len(users) == 8  # 6 seeded + the pushed user + the new lead
        for u in users:
            assert u.crm is not None, u
            record = records[(str(u.crm.kind), u.crm.id)]
            assert sell_view(record) == user_view(u), (u.email, record)
