"""What the metrics read from the database at scrape time (``operations.metrics``): the
outbox by state (one ``COUNT ... GROUP BY``, per channel when asked) and a ping.

Both are cheap enough for a scrape every few seconds: the caller keeps the counts for 10 s.
"""

from __future__ import annotations

from tortoise import connections
from tortoise.functions import Count

from ..vocabulary import OutboxState
from .models import OutboxMessage


async def outbox_states(per_channel: bool) -> dict[tuple[int | None, str], int]:
    """Messages per (channel id or None, state); every state present (0 when none)."""
    counts: dict[tuple[int | None, str], int] = {(None, s.value): 0 for s in OutboxState}
    if per_channel:
        rows = await (
            OutboxMessage.all()
            .annotate(n=Count("id"))
            .group_by("channel_id", "state")
            .values_list("channel_id", "state", "n")
        )
        counts = {}
        for channel_id, state, n in rows:
            for s in OutboxState:
                counts.setdefault((channel_id, s.value), 0)
            counts[(channel_id, state)] = n
        return counts
    rows = await (
        OutboxMessage.all().annotate(n=Count("id")).group_by("state").values_list("state", "n")
    )
    for state, n in rows:
        counts[(None, state)] = n
    return counts


async def ping() -> None:
    """One trivial statement: raises when the database does not answer."""
    await connections.get("default").execute_query("SELECT 1")
