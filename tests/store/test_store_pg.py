"""The PostgreSQL store's schema: the same migrations as SQLite, with every foreign key
indexed and every timestamp read back aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store.bridge import Store

# A foreign key whose column leads no index (PostgreSQL makes none for it): a cascade
# or a lookup by it scans the whole table.
UNINDEXED_FKS = """
SELECT c.conrelid::regclass::text || '.' || a.attname
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND NOT EXISTS (
    SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
ORDER BY 1
"""


def test_every_foreign_key_leads_an_index(pg_server, pg_database):
    assert pg_server.sql(UNINDEXED_FKS, pg_database) == ""


async def test_timestamps_come_back_aware_utc_whatever_offset_went_in(pg_target):
    at = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    async with Store.open(pg_target) as store:
        created = await store.run(channel_store.create, {"name": "Acme"}, None, at)
        doc = await store.run(channel_store.get, created.channel.id)
    assert doc.created_at == at and doc.created_at.utcoffset() == timedelta(0)
    assert doc.created_at.tzinfo is not None and doc.created_at.astimezone(UTC).hour == 9
