"""users.list against a store of 100,000 users (plus 10,000 in another channel): the first
page, a deep page, searches and filtered pages, each through the store bridge as the
control method runs it (one crossing, the total counted every time). Also the rate of
users.add and users.update use cases, one crossing each.

Figures are medians of repeated runs, in milliseconds, with their ratio to the first page.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users
from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import User as UserRow
from kuloo_daemon.store.models import UserTag
from kuloo_daemon.vocabulary import Actor, CrmKind, Frequency, Source

USERS = 100_000
OTHER_CHANNEL_USERS = 10_000
REPEAT = 15
TAGS = ["onboarding", "pro-tips", "webinar", "launch", "rare"]
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Margaret",
    "Ken",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Backus",
    "Hamilton",
    "Thompson",
]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def _fill(channel_id: int, count: int, first_id: int, seed: int) -> None:
    from tortoise.transactions import in_transaction

    rnd = random.Random(seed)
    frequencies = [f.value for f in Frequency]
    rows, tags = [], []
    for n in range(count):
        uid = first_id + n
        promo = [t for t in TAGS[:4] if rnd.random() < 0.15] + (
            ["rare"] if rnd.random() < 0.001 else []
        )
        linked = rnd.random()
        rows.append(
            UserRow(
                id=uid,
                channel_id=channel_id,
                kuloo_id=f"{seed:02d}{uid:030x}",
                email=f"user{uid}@example{uid % 97}.com",
                email_key=f"user{uid}@example{uid % 97}.com",
                first_name=rnd.choice(FIRST),
                last_name=rnd.choice(LAST),
                source=rnd.choice(
                    [Source.ADMIN, Source.SYNC, Source.SYNC, Source.APP, Source.SIGNUP]
                ).value,
                frequency=rnd.choice(frequencies),
                unsubscribed=rnd.random() < 0.2,
                add_to_crm=rnd.random() < 0.5,
                promo_tags=promo,
                crm_kind=(
                    CrmKind.LEAD.value
                    if linked < 0.4
                    else CrmKind.CONTACT.value
                    if linked < 0.6
                    else None
                ),
                crm_id=uid if linked < 0.6 else None,
                sync_error="over the plan's limit" if rnd.random() < 0.01 else "",
                created_at=NOW,
                updated_at=NOW,
                changed_at={},
                revision=1,
            )
        )
        rows[-1].search_text = users.search_text(
            rows[-1].email, rows[-1].first_name, rows[-1].last_name
        )
        tags += [UserTag(user_id=uid, channel_id=channel_id, tag=t) for t in promo]
    async with in_transaction():
        await UserRow.bulk_create(rows, batch_size=2000)
        await UserTag.bulk_create(tags, batch_size=2000)


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def _time(
    store: Store, channel_id: int, filters: users.Filters, after: int | None = None, limit: int = 50
) -> tuple[float, int]:
    samples, total = [], 0
    for _ in range(REPEAT):
        started = time.perf_counter()
        page = await store.run(users.list_page, channel_id, filters, after, limit)
        samples.append(time.perf_counter() - started)
        total = page.total
    return _median_ms(samples), total


async def _run(db: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with Store.open(db) as store:
        main = await store.run(
            channel_store.create, {"name": "Big", "sequential_tags": TAGS}, None, NOW
        )
        other = await store.run(
            channel_store.create, {"name": "Other", "sequential_tags": TAGS}, None, NOW
        )
        ch = main.channel.id
        started = time.perf_counter()
        await store.run(_fill, ch, USERS, 1, 1)
        await store.run(_fill, other.channel.id, OTHER_CHANNEL_USERS, USERS + 1, 2)
        print(
            f"   filled {USERS + OTHER_CHANNEL_USERS:,} users in {time.perf_counter() - started:.1f} s"
        )

        cases = [
            ("first page", users.Filters(), None),
            ("deep page (after 90%)", users.Filters(), int(USERS * 0.9)),
            ("search 'hopper' (names)", users.Filters(query="hopper"), None),
            ("search 'user4242' (email)", users.Filters(query="user4242"), None),
            ("search 'grace hop' (2 words)", users.Filters(query="grace hop"), None),
            ("search with no match", users.Filters(query="zzzz"), None),
            ("subscription=daily", users.Filters(subscription="daily"), None),
            ("subscription=unsubscribed", users.Filters(subscription="unsubscribed"), None),
            ("source=signup", users.Filters(source=Source.SIGNUP), None),
            ("promo=webinar", users.Filters(promo="webinar"), None),
            ("promo=rare (~0.1%)", users.Filters(promo="rare"), None),
            ("crm_kind=none", users.Filters(crm_kind="none"), None),
            ("has_sync_error (~1%)", users.Filters(has_sync_error=True), None),
            (
                "weekly+webinar+lead",
                users.Filters(subscription="weekly", promo="webinar", crm_kind="lead"),
                None,
            ),
        ]
        base = None
        print(
            f"   {'users.list (limit 50, total counted)':40} {'median ms':>10} {'x first':>8} {'total':>8}"
        )
        for name, filters, after in cases:
            ms, total = await _time(store, ch, filters, after)
            base = base or ms
            print(f"   {name:40} {ms:10.1f} {ms / base:8.1f} {total:8,}")
            figures[f"list {name} ms"] = ms
        ms, _ = await _time(store, ch, users.Filters(), None, limit=500)
        print(f"   {'first page, limit 500':40} {ms:10.1f} {ms / base:8.1f}")
        figures["list first page limit 500 ms"] = ms

        count = 1000
        started = time.perf_counter()
        added = []
        for i in range(count):
            added.append(
                await store.run(
                    users.add,
                    ch,
                    {
                        "email": f"new{i}@example.org",
                        "promo_tags": ["webinar"],
                        "source": Source.ADMIN,
                    },
                    Actor.ADMIN,
                    NOW,
                )
            )
        rate = count / (time.perf_counter() - started)
        print(f"   users.add: {rate:,.0f}/s (one crossing and transaction each, {count:,} adds)")
        figures["users.add per s"] = rate
        started = time.perf_counter()
        for i, user in enumerate(added):
            await store.run(
                users.update,
                user.id,
                {"frequency": "daily", "promo_tags": ["launch"]},
                Actor.APP,
                NOW + timedelta(seconds=i),
            )
        rate = count / (time.perf_counter() - started)
        print(f"   users.update (2 fields, tags rewritten): {rate:,.0f}/s")
        figures["users.update per s"] = rate
    return figures


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        return trio.run(_run, Path(tmp) / "bench.sqlite3")


if __name__ == "__main__":
    main()
