"""``store.delivery.plan`` writes each planned user's next due time back; a page whose
users have more distinct times than ``_FEW_TIMES`` takes the other path (one CASE
statement per batch). Both stores: the statement's parameters must land as times."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kuloo_daemon.store import delivery as store


@pytest.fixture
def delivery_backend(backend):
    return backend


async def _due_times(ids):
    from kuloo_daemon.store.models import User

    return dict(await User.filter(id__in=ids).values_list("id", "next_due_at"))


async def test_a_page_of_many_distinct_due_times_stores_each_users_own(env_factory):
    """Planted bug: the many-times path writes nothing, or one user's time for all."""
    n = store._FEW_TIMES + 5
    async with env_factory() as env:
        ch = await env.channel()
        joined = {}
        for i in range(n):  # weekly digests, each user joining a minute after the last
            uid = await env.user(ch, f"w{i}@example.com", frequency="weekly")
            joined[uid] = env.clock.now()
            await env.clock.advance(60)
        await env.delivery.run(None)
        stored = await env.store.run(_due_times, list(joined))
        assert stored == {uid: at + timedelta(days=7) for uid, at in joined.items()}
        assert await env.store.run(store.due_users, ch, env.clock.now()) == 0
