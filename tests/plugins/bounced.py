"""Bounced users for end-to-end tests: ``take_bounces`` applies bounces to a running (or
stopped) daemon's SQLite file through ``store.bounces.take``, as its bounce mailbox reader
does (without the event the reader publishes), and can add emails sent now for the
deliverability figures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import trio

from kuloo_daemon.rules.bounces import Bounce, Kind, VerpSigner
from kuloo_daemon.store import bounces
from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import OutboxMessage
from kuloo_daemon.store.models import User as UserRow
from kuloo_daemon.vocabulary import OutboxState

SIGNER = VerpSigner([b"k" * 32])  # take() reads the token's KulooId; any keys sign it


def bounce(kind: Kind, kuloo_id: str, status: str = "", reason: str = "", outbox_id: int = 1):
    """A classified message naming the user of ``kuloo_id`` by its VERP token."""
    token = SIGNER.verify(SIGNER.bounce(kuloo_id, outbox_id) + "@x.example")
    assert token is not None
    return Bounce(kind, status, reason, token)


def take_bounces(
    database: Path, taken: Sequence[Bounce], now: datetime, *, sent: int = 0, channel: int = 1
) -> None:
    """Apply ``taken`` at ``now`` (and record ``sent`` emails of ``channel`` sent at ``now``)
    on the SQLite file ``database``. Synchronous: from async tests, run it in a thread."""

    async def sent_mail() -> None:
        user = await UserRow.filter(channel_id=channel).order_by("id").first()
        assert user is not None
        for i in range(sent):
            await OutboxMessage.create(
                channel_id=channel,
                user_id=user.id,
                kind="digest",
                state=OutboxState.SENT.value,
                message_id=f"<sent.{channel}.{i}@example.com>",
                sent_at=now,
            )

    async def main() -> None:
        async with Store.open(str(database)) as store:
            if sent:
                await store.run(sent_mail)
            for b in taken:
                await store.run(bounces.take, b, now)

    trio.run(main)
