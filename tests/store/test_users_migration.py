"""Migrations 0004-0005 on a database that already has users: nothing of theirs is lost."""

import asyncio
import sqlite3

import trio

from kuloo_daemon.store.bridge import Store, tortoise_config
from kuloo_daemon.store.users import Filters, audit, get_by_email, list_page

NOW = "2026-01-05 09:00:00+00:00"


def migrate(db: str, target: str | None = None) -> None:
    async def run() -> None:
        from tortoise import Tortoise
        from tortoise.migrations.api import migrate as apply

        try:
            await apply(config=tortoise_config(db), target=target)
        finally:
            await Tortoise.close_connections()

    asyncio.run(run())


def test_users_their_mail_and_audit_survive_and_get_their_keys(short_tmp):
    db = f"{short_tmp}/old.sqlite3"
    migrate(db, "models.0003_clock_state_and_states")
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO channel (id, name, plan, add_all_users_to_crm, sequential_tags, sender, postal_address,"
        " connection_status, connection_problems, sync_state, sync_status, created_at, updated_at)"
        " VALUES (1, 'c', 'free', 0, '[]', '', '', 'none', '[]', '{}', '', ?, ?)",
        (NOW, NOW),
    )
    con.execute(
        "INSERT INTO kuloo_user (id, channel_id, kuloo_id, email, first_name, last_name, source, frequency,"
        " unsubscribed, add_to_crm, promo_tags, sync_error, synced_values, created_at, updated_at)"
        " VALUES (1, 1, 'K1', ' Ada@Example.COM', 'Ada', 'Lovelace', '', 'weekly', 0, 0, '[]', '', '{}', ?, ?)",
        (NOW, NOW),
    )
    con.execute(
        "INSERT INTO article (id, channel_id, title, format, body, url, tags, delay_seconds, version,"
        " created_at, updated_at) VALUES (1, 1, 't', 'markdown', '', '', '[\"x\"]', 0, 1, ?, ?)",
        (NOW, NOW),
    )
    con.execute(
        "INSERT INTO sequence_progress (user_id, article_id, sent_at) VALUES (1, 1, ?)", (NOW,)
    )
    con.execute(
        "INSERT INTO outbox_message (id, channel_id, user_id, kind, state, message_id, attempts,"
        " last_error, created_at, updated_at) VALUES (1, 1, 1, 'digest', 'sent', '<1@k>', 0, '', ?, ?)",
        (NOW, NOW),
    )
    con.execute(
        "INSERT INTO audit_entry (channel_id, user_id, at, actor, field, old, new, note)"
        " VALUES (1, 1, ?, 'sync', 'frequency', '\"daily\"', '\"weekly\"', 'from Sell')",
        (NOW,),
    )
    con.commit()
    con.close()

    migrate(db)
    con = sqlite3.connect(db)
    assert con.execute(
        "SELECT email_key, search_text, revision, changed_at FROM kuloo_user"
    ).fetchall() == [("ada@example.com", "ada@example.com ada lovelace", 1, "{}")]
    assert con.execute("SELECT state FROM outbox_message").fetchall() == [("sent",)]
    assert con.execute("SELECT user_id FROM sequence_progress").fetchall() == [(1,)]
    assert con.execute("SELECT next_due_at FROM kuloo_user").fetchall() == [
        (None,)
    ]  # 0007: due once, planned then
    assert (
        con.execute("SELECT name FROM sqlite_master WHERE name = 'audit_values_0004'").fetchall()
        == []
    )
    con.close()

    async def read():
        async with Store.open(db) as store:
            user = await store.run(get_by_email, 1, "ADA@example.com")
            found = await store.run(list_page, 1, Filters(query="lovelace"), None, 10)
            return user, found, await store.run(audit, user.id, 10)

    user, found, entries = trio.run(read)
    assert user.kuloo_id == "K1" and [u.id for u in found.users] == [1]
    assert [(e.actor, e.field, e.old, e.new, e.note) for e in entries] == [
        ("sync", "frequency", "daily", "weekly", "from Sell")
    ]
