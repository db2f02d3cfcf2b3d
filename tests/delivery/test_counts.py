"""The dashboard's figures: ``outbox.counts`` and ``sync.errors``' ``total`` count in the
database, exact however many rows there are (real SQLite, the control handlers in process)."""

from __future__ import annotations

import pytest

from kuloo_daemon.control import delivery_methods, sync_methods
from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.store import NotFound
from kuloo_daemon.store.models import OutboxMessage, SyncError


async def _seed(channel: int, user: int, states: dict[str, int], errors: int, now) -> None:
    await OutboxMessage.bulk_create(
        [
            OutboxMessage(
                channel_id=channel,
                user_id=user,
                kind="digest",
                state=state,
                message_id=f"<{state}.{i}@t>",
                created_at=now,
                updated_at=now,
            )
            for state, n in states.items()
            for i in range(n)
        ],
        batch_size=500,
    )
    await SyncError.bulk_create(
        [
            SyncError(
                channel_id=channel,
                crm_kind="lead",
                crm_id=i,
                code="duplicate",
                error="two leads",
                created_at=now,
                updated_at=now,
            )
            for i in range(errors)
        ],
        batch_size=500,
    )


async def test_outbox_counts_and_sync_error_total_are_exact_beyond_a_page(env_factory):
    """Planted bugs: counts of one page; one channel's rows counted in another's."""
    async with env_factory() as env:
        a = await env.channel()
        b = await env.channel(name="Other")
        ua = await env.user(a, "a@example.com", unsubscribed=True)
        ub = await env.user(b, "b@example.com", unsubscribed=True)
        now = env.clock.now()
        await env.store.run(_seed, a, ua, {"queued": 1001, "sent": 7, "uncertain": 2}, 501, now)
        await env.store.run(_seed, b, ub, {"failed": 3}, 2, now)
        counts = await delivery_methods.outbox_counts(env.services, {"channel": a})
        assert counts == {
            "counts": {
                "queued": 1001,
                "sending": 0,
                "sent": 7,
                "failed": 0,
                "uncertain": 2,
                "cancelled": 0,
            }
        }
        assert (await delivery_methods.outbox_counts(env.services, {"channel": b}))["counts"][
            "failed"
        ] == 3
        page = await sync_methods.sync_errors(env.services, {"channel": a, "limit": 1})
        assert len(page["errors"]) == 1 and page["total"] == 501
        assert (await sync_methods.sync_errors(env.services, {"channel": b}))["total"] == 2
        with pytest.raises(NotFound):
            await delivery_methods.outbox_counts(env.services, {"channel": 99})
        with pytest.raises(ProtocolError):
            await delivery_methods.outbox_counts(env.services, {"channel": "1"})
