"""store.bounces on a real SQLite file (and PostgreSQL with ``backend``): what a hard bounce,
soft bounces, a complaint and a mailto unsubscribe do, once; the relay's refusals; the
clearing; the deliverability figures and Sell's Sync error."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from kuloo_daemon.rules.bounces import Bounce, Kind, VerpSigner
from kuloo_daemon.store import bounces, users
from kuloo_daemon.store.models import AuditEntry, BounceEvent, OutboxMessage
from kuloo_daemon.store.models import User as UserRow
from kuloo_daemon.store.sync.rows import user_view
from kuloo_daemon.vocabulary import Actor, OutboxState

from .test_users_store import T0, add, make_channel, query

SIGNER = VerpSigner([b"k" * 32])


def _token(kuloo_id: str, outbox_id: int = 1):
    token = SIGNER.verify(SIGNER.bounce(kuloo_id, outbox_id) + "@bounces.example.com")
    assert token is not None
    return token


def hard(kuloo_id: str, outbox_id: int = 1, reason="550 5.1.1 <x@example.org>: User unknown"):
    return Bounce(Kind.HARD, "5.1.1", reason, _token(kuloo_id, outbox_id))


async def _outbox(store, user, state=OutboxState.QUEUED, sent_at=None, n=1):
    async def make():
        rows = []
        for i in range(n):
            rows.append(
                await OutboxMessage.create(
                    channel_id=user.channel_id,
                    user_id=user.id,
                    kind="digest",
                    state=state.value,
                    message_id=f"<{user.id}.{state.value}.{i}.{sent_at}@example.com>",
                    sent_at=sent_at,
                    created_at=sent_at or T0,  # business time, as the outbox writes it
                )
            )
        return rows

    return await store.run(make)


async def _row(store, user_id):
    return await query(store, lambda: UserRow.get(id=user_id))


async def test_a_hard_bounce_marks_the_user_cancels_mail_and_happens_once(store):
    ch = await make_channel(store)
    u = await add(store, ch, "gone@example.org")
    await _outbox(store, u, n=2)
    digest = hashlib.sha256(b"the dsn").hexdigest()
    taken = await store.run(bounces.take, hard(u.kuloo_id), T0, digest=digest)
    assert taken.user_ids == (u.id,) and taken.channel_ids == (ch,) and not taken.duplicate
    again = await store.run(bounces.take, hard(u.kuloo_id), T0, digest=digest)
    assert again.duplicate and again.user_ids == ()
    row = await _row(store, u.id)
    assert (row.bounce_status, row.bounce_at) == ("5.1.1", T0)
    assert "User unknown" in row.bounce_reason
    assert bounces.bounce_of(row)["status"] == "5.1.1"
    states = await query(store, lambda: OutboxMessage.filter(user_id=u.id).values_list("state"))
    assert sorted(s for (s,) in states) == ["cancelled", "cancelled"]
    assert await query(store, lambda: BounceEvent.filter(user_id=u.id).count()) == 1
    audit = await query(store, lambda: AuditEntry.filter(user_id=u.id, field="bounce").all())
    assert [a.actor for a in audit] == ["bounce"]
    # Sell's Sync error carries the bounce; the user's own sync error stays apart
    assert row.sync_error == ""
    assert user_view(row)["sync_error"].startswith("Email bounced: 5.1.1 ")
    page = await store.run(users.list_page, ch, users.Filters(bounced=True), None, 10)
    assert [x.id for x in page.users] == [u.id]
    page = await store.run(users.list_page, ch, users.Filters(bounced=False), None, 10)
    assert page.users == ()


async def test_a_changed_email_or_clear_bounce_clears_it_and_mail_resumes_without_backlog(store):
    ch = await make_channel(store)
    u = await add(store, ch, "gone@example.org")
    v = await add(store, ch, "also.gone@example.org")
    later = T0 + timedelta(days=3)
    for user in (u, v):
        await store.run(bounces.take, hard(user.kuloo_id), T0)
    await store.run(users.update, u.id, {"email": "new@example.org"}, Actor.SYNC, later)
    row = await _row(store, u.id)
    assert (row.bounce_status, row.bounce_at, row.last_digest_at) == ("", None, later)
    assert user_view(row)["sync_error"] == ""
    cleared = await store.run(users.update, v.id, {}, Actor.ADMIN, later, clear_bounce=True)
    assert cleared.changed == ("bounce",)
    again = await store.run(users.update, v.id, {}, Actor.ADMIN, later, clear_bounce=True)
    assert again.changed == ()
    row = await _row(store, v.id)
    assert row.bounce_status == "" and row.last_digest_at == later
    audit = await query(
        store, lambda: AuditEntry.filter(field="bounce").order_by("id").values_list("actor", "new")
    )
    assert [a for a, _ in audit] == ["bounce", "bounce", "sync", "admin"]


async def test_soft_bounces_count_as_hard_only_past_the_limit_and_the_span(store):
    ch = await make_channel(store)
    u = await add(store, ch, "full@example.org")
    soft = Bounce(Kind.SOFT, "4.2.2", "mailbox full", _token(u.kuloo_id))
    for day in range(4):
        await store.run(bounces.take, soft, T0 + timedelta(days=2 * day), soft_limit=5, soft_days=7)
    assert (await _row(store, u.id)).bounce_status == ""
    taken = await store.run(bounces.take, soft, T0 + timedelta(days=8), soft_limit=5, soft_days=7)
    assert taken.user_ids == (u.id,)
    assert (await _row(store, u.id)).bounce_status == "4.2.2"


async def test_soft_bounces_in_a_burst_are_not_a_hard_bounce(store):
    """soft_limit of them within less than soft_days: a full mailbox for a day, not a dead one."""
    ch = await make_channel(store)
    u = await add(store, ch, "full@example.org")
    soft = Bounce(Kind.SOFT, "4.2.2", "mailbox full", _token(u.kuloo_id, 99_999))
    for hour in range(8):
        at = T0 + timedelta(hours=hour)
        await store.run(bounces.take, soft, at, soft_limit=5, soft_days=7)
    assert (await _row(store, u.id)).bounce_status == ""


async def test_a_delivery_between_soft_bounces_restarts_the_count(store):
    ch = await make_channel(store)
    u = await add(store, ch, "full@example.org")
    soft = Bounce(Kind.SOFT, "4.2.2", "mailbox full", _token(u.kuloo_id, 99_999))
    for day in range(3):
        await store.run(bounces.take, soft, T0 + timedelta(days=day), soft_limit=5, soft_days=7)
    await _outbox(store, u, OutboxState.SENT, sent_at=T0 + timedelta(days=3))
    for day in range(7, 10):
        await store.run(bounces.take, soft, T0 + timedelta(days=day), soft_limit=5, soft_days=7)
    assert (await _row(store, u.id)).bounce_status == ""


async def test_a_complaint_unsubscribes_and_a_mailto_acts_as_the_link(store):
    ch = await make_channel(store)
    u = await add(store, ch, "angry@example.org")
    w = await add(store, ch, "leaving@example.org")
    await _outbox(store, u)
    taken = await store.run(bounces.take, Bounce(Kind.COMPLAINT, token=_token(u.kuloo_id)), T0)
    assert taken.user_ids == (u.id,)
    token = SIGNER.verify(SIGNER.unsubscribe(w.kuloo_id) + "@bounces.example.com")
    await store.run(bounces.take, Bounce(Kind.UNSUBSCRIBE, token=token), T0)
    for user, actor, note in ((u, "complaint", "feedback report"), (w, "link", "mailto")):
        row = await _row(store, user.id)
        assert row.unsubscribed and row.bounce_status == ""
        entry = await query(
            store,
            lambda uid=user.id: AuditEntry.filter(user_id=uid, field="unsubscribed").first(),
        )
        assert (entry.actor, entry.note) == (actor, note)
    states = await query(store, lambda: OutboxMessage.filter(user_id=u.id).values_list("state"))
    assert states == [("cancelled",)]
    figures = await store.run(bounces.deliverability, ch, T0)
    assert figures.complaints_30d == 1 and figures.complaint_rate == 0.0


async def test_ten_users_refused_alike_at_rcpt_are_the_relays_problem(store):
    ch = await make_channel(store)
    many = [await add(store, ch, f"user{i}@example.org") for i in range(10)]
    one = await add(store, ch, "single@example.org")
    refusals = [
        hard(x.kuloo_id, i, f"550 5.1.1 <user{i}@example.org>: Relay access denied")
        for i, x in enumerate(many)
    ] + [hard(one.kuloo_id, 99)]
    changed = await store.run(bounces.refused_at_rcpt, refusals, T0)
    assert changed == [one.id]
    assert (await _row(store, many[0].id)).bounce_status == ""
    nine = refusals[:9] + refusals[10:]
    changed = await store.run(bounces.refused_at_rcpt, nine, T0)
    assert len(changed) == 9


async def test_deliverability_counts_the_last_30_days(store):
    ch = await make_channel(store)
    u = await add(store, ch, "a@example.org")
    await _outbox(store, u, OutboxState.SENT, sent_at=T0 - timedelta(days=1), n=4)
    await _outbox(store, u, OutboxState.SENT, sent_at=T0 - timedelta(days=40), n=3)
    await store.run(bounces.take, hard(u.kuloo_id), T0 - timedelta(days=31))
    figures = await store.run(bounces.deliverability, ch, T0)
    assert (figures.sent_30d, figures.bounced_30d) == (4, 0)
    v = await add(store, ch, "b@example.org")
    await store.run(bounces.take, hard(v.kuloo_id), T0)
    figures = await store.run(bounces.deliverability, ch, T0)
    assert figures.as_dict() == {
        "sent_30d": 4,
        "bounced_30d": 1,
        "complaints_30d": 0,
        "bounce_rate": 0.25,
        "complaint_rate": 0.0,
    }


async def test_a_report_without_a_token_names_no_one(store):
    """Anyone can write to the bounce domain, quoting any address: without a genuine token
    a bounce or a complaint has no effect. Planted bug: users found by the quoted address."""
    ch = await make_channel(store)
    victim = await add(store, ch, "Victim@Example.org")
    await _outbox(store, victim, OutboxState.SENT, sent_at=T0 - timedelta(days=2))
    for kind in (Kind.HARD, Kind.COMPLAINT):
        bounce = Bounce(kind, "5.1.1", "forged", recipient="victim@example.org")
        assert (await store.run(bounces.take, bounce, T0)).user_ids == ()
    row = await _row(store, victim.id)
    assert row.bounce_status == "" and not row.unsubscribed


async def test_a_late_bounce_about_the_old_address_leaves_the_new_one_alone(store):
    """A DSN for mail sent before the address changed (or before the bounce was cleared)
    arrives days later: counted, no effect. Planted bug: the new address bounced again."""
    ch = await make_channel(store)
    u = await add(store, ch, "old@example.org")
    (old_mail,) = await _outbox(store, u, OutboxState.SENT, sent_at=T0)
    await store.run(bounces.take, hard(u.kuloo_id, old_mail.id), T0 + timedelta(hours=1))
    fixed = T0 + timedelta(days=1)
    await store.run(users.update, u.id, {"email": "new@example.org"}, Actor.SYNC, fixed)
    late = hard(u.kuloo_id, old_mail.id, "550 5.1.1 <old@example.org>: gone, said again")
    taken = await store.run(bounces.take, late, fixed + timedelta(days=2))
    assert taken.user_ids == ()
    assert (await _row(store, u.id)).bounce_status == ""
    # the same after an admin's clear_bounce: only mail sent since counts
    v = await add(store, ch, "v@example.org")
    (first,) = await _outbox(store, v, OutboxState.SENT, sent_at=T0)
    await store.run(bounces.take, hard(v.kuloo_id, first.id), T0 + timedelta(hours=1))
    await store.run(users.update, v.id, {}, Actor.ADMIN, fixed, clear_bounce=True)
    assert (await store.run(bounces.take, hard(v.kuloo_id, first.id), fixed)).user_ids == ()
    # a message sent after the change bounces as any other
    (after,) = await store.run(_outbox_later, v, fixed + timedelta(hours=1))
    taken = await store.run(bounces.take, hard(v.kuloo_id, after.id), fixed + timedelta(hours=2))
    assert taken.user_ids == (v.id,)


async def _outbox_later(user, created):
    return [
        await OutboxMessage.create(
            channel_id=user.channel_id,
            user_id=user.id,
            kind="digest",
            state=OutboxState.SENT.value,
            message_id=f"<later.{user.id}@example.com>",
            sent_at=created,
            created_at=created,
        )
    ]


async def test_soft_bounces_before_a_clear_do_not_count_after_it(store):
    """Planted bug: every soft bounce of the year counted, so one new full mailbox after a
    clear_bounce bounces the user again at once."""
    ch = await make_channel(store)
    u = await add(store, ch, "full@example.org")
    soft = Bounce(Kind.SOFT, "4.2.2", "mailbox full", _token(u.kuloo_id, 99_999))
    for day in range(0, 10, 2):
        await store.run(bounces.take, soft, T0 + timedelta(days=day), soft_limit=5, soft_days=7)
    assert (await _row(store, u.id)).bounce_status == "4.2.2"
    cleared = T0 + timedelta(days=11)
    await store.run(users.update, u.id, {}, Actor.ADMIN, cleared, clear_bounce=True)
    (since,) = await store.run(_outbox_later, u, cleared + timedelta(minutes=1))
    soft = Bounce(Kind.SOFT, "4.2.2", "mailbox full", _token(u.kuloo_id, since.id))
    await store.run(bounces.take, soft, cleared + timedelta(hours=1), soft_limit=5, soft_days=7)
    assert (await _row(store, u.id)).bounce_status == ""


async def test_the_figures_leave_out_confirmations_and_keep_small_rates_exact(store):
    """A confirmation's c- address is learnt by anyone who signs up: its bounces never move
    the channel's rates. 1 complaint in 960 emails is 0.104 %, over the 0.1 % warning
    (rounding to 4 places made it 0.1 %). Planted bugs: c- events counted; rates rounded."""
    ch = await make_channel(store)
    u = await add(store, ch, "a@example.org")
    await _outbox(store, u, OutboxState.SENT, sent_at=T0 - timedelta(days=1), n=960)
    confirm = SIGNER.verify(SIGNER.confirm(ch) + "@bounces.example.com")
    for i in range(3):
        report = Bounce(Kind.HARD, "5.1.1", f"gone {i}", confirm)
        await store.run(bounces.take, report, T0, digest=f"{i:064d}")
    await store.run(bounces.take, Bounce(Kind.COMPLAINT, token=_token(u.kuloo_id)), T0)
    figures = await store.run(bounces.deliverability, ch, T0)
    assert (figures.bounced_30d, figures.complaints_30d) == (0, 1)
    assert figures.complaint_rate == 1 / 960 and figures.complaint_rate > 0.001


async def test_a_batch_is_taken_in_one_go_in_order_and_the_same_bytes_twice_once(store):
    """The mailbox's batch (``take_many``): each message's result in order, a message read
    twice in one batch (or read before) a duplicate with no second effect."""
    ch = await make_channel(store)
    u = await add(store, ch, "gone@example.org")
    w = await add(store, ch, "angry@example.org")
    first, second = "a" * 64, "b" * 64
    items = [
        (hard(u.kuloo_id), first),
        (Bounce(Kind.COMPLAINT, token=_token(w.kuloo_id)), second),
        (hard(u.kuloo_id), first),
    ]
    taken = await store.run(bounces.take_many, items, T0)
    assert [(t.kind, t.user_ids, t.duplicate) for t in taken] == [
        (Kind.HARD, (u.id,), False),
        (Kind.COMPLAINT, (w.id,), False),
        (Kind.HARD, (), True),
    ]
    again = await store.run(bounces.take_many, items[:1], T0)
    assert again[0].duplicate
    assert await query(store, lambda: BounceEvent.filter(user_id=u.id).count()) == 1
