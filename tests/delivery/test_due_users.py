"""A delivery pass reads only the users due (``User.next_due_at``), and every change that
decides a user's next email makes them due; passes after events go per changed channel.

Real SQLite, real SMTP (aiosmtpd), the manual clock. ``decide`` is wrapped to record
which users each pass read.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from kuloo_daemon.delivery import schedule
from kuloo_daemon.delivery import service as service_mod
from kuloo_daemon.store import delivery as store

DAY = 86400
WELCOME = "Welcome to Kuloo Gardens"
TOOLS = "Five tools worth buying"


def record_reads(monkeypatch) -> list[list[int]]:
    """Each call of ``decide`` appends the ids of the users it was given."""
    reads: list[list[int]] = []
    real = schedule.decide

    def decide(articles, users, now):
        reads.append(sorted(u.id for u in users))
        return real(articles, users, now)

    monkeypatch.setattr(schedule, "decide", decide)
    return reads


def read_since(reads: list[list[int]], mark: int) -> list[int]:
    return sorted(u for page in reads[mark:] for u in page)


async def test_a_pass_reads_only_the_users_due(env_factory, smtp_sink, monkeypatch):
    """Planted bug: ``plan`` pages through every user of the channel (no due filter)."""
    reads = record_reads(monkeypatch)
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        first = [
            await env.user(ch, f"u{i}@example.com", tags=["welcome"], frequency="disabled")
            for i in range(3)
        ]
        await env.delivery.run(None)
        assert set(first) <= set(read_since(reads, 0))
        assert all(smtp_sink.subjects(f"u{i}@example.com") == [WELCOME] for i in range(3))
        assert await env.store.run(store.due_users, ch, env.clock.now()) == 0

        mark = len(reads)
        await env.delivery.run(None)
        assert read_since(reads, mark) == []  # nobody is due: nobody is read

        late = await env.user(ch, "late@example.com", tags=["welcome"], frequency="disabled")
        mark = len(reads)
        await env.delivery.run(None)
        assert set(read_since(reads, mark)) == {
            late
        }  # the new user only (read again once it was sent)
        assert smtp_sink.subjects("late@example.com") == [WELCOME]

        mark = len(reads)
        await env.advance(2 * DAY - 60)
        assert read_since(reads, mark) == []  # the next email is 2 days after the welcome
        await env.advance(60)
        assert set(read_since(reads, mark)) == {*first, late}
        assert all(smtp_sink.subjects(f"u{i}@example.com") == [WELCOME, TOOLS] for i in range(3))


async def test_a_frequency_change_that_makes_a_digest_due_is_picked_up(
    env_factory, smtp_sink, monkeypatch
):
    """Planted bug: ``users.apply_changes`` leaves ``next_due_at`` as it was."""
    reads = record_reads(monkeypatch)
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        fay = await env.user(ch, "fay@example.com", frequency="disabled")
        await env.delivery.run(None)
        await env.advance(8 * DAY)
        assert smtp_sink.to("fay@example.com") == []  # no digests for her
        mark = len(reads)
        await env.update_user(fay, frequency="weekly")
        await env.delivery.run(None)
        assert fay in read_since(reads, mark)
        digests = smtp_sink.to("fay@example.com")
        assert len(digests) == 1  # her window since joining closed a day ago: the digest at once
        mark = len(reads)
        await env.advance(7 * DAY - 60)
        assert fay not in read_since(reads, mark)  # next one a week after that digest
        await env.advance(60)
        assert fay in read_since(reads, mark)


async def test_articles_that_come_later_reach_users_whose_sequence_had_ended(
    env_factory, smtp_sink, short_tmp
):
    """Planted bugs: an import does not make the users of the new article's tags due; a user's
    due time ignores an upcoming publication of their sequence."""
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        gil = await env.user(ch, "gil@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery.run(None)
        await env.advance(3 * DAY)
        assert smtp_sink.subjects("gil@example.com") == [WELCOME, TOOLS]
        await env.advance(DAY)
        folder = env.services.config.articles_root / "sample" / "sequence"
        (folder / "04-late.md").write_text(
            "---\nid: welcome-3\ntitle: Late arrival\ntags: [welcome]\npublished_at: 2026-01-04T08:00:00Z\n"
            "delay_seconds: 0\n---\nAlready published when imported.\n"
        )
        later = env.clock.now() + timedelta(days=3)
        (folder / "05-later.md").write_text(
            f"---\nid: welcome-4\ntitle: Published later\ntags: [welcome]\n"
            f"published_at: {later.isoformat().replace('+00:00', 'Z')}\ndelay_seconds: 0\n---\nNot yet.\n"
        )
        await env.delivery.import_articles(ch, "sample")
        await env.delivery.run(None)
        assert smtp_sink.subjects("gil@example.com") == [WELCOME, TOOLS, "Late arrival"]
        await env.advance(3 * DAY - 60)
        assert smtp_sink.subjects("gil@example.com")[-1] == "Late arrival"
        await env.advance(60)
        assert smtp_sink.subjects("gil@example.com") == [
            WELCOME,
            TOOLS,
            "Late arrival",
            "Published later",
        ]
        progress = await env.delivery.progress(gil)
        assert progress["next"] is None


async def test_changes_are_planned_per_channel_once_per_burst_and_never_lost(
    env_factory, smtp_sink, monkeypatch
):
    """Planted bugs: the changes job plans every channel; a change made during a pass is
    forgotten (the dirty mark cleared after the pass instead of before)."""
    async with env_factory() as env:
        a = await env.channel()
        b = await env.channel(name="Other")
        await env.delivery.run(None)
        assert not env.delivery.dirty
        planned: list[int] = []
        real_plan = store.plan
        during: list[int] = []

        async def plan(channel_id, *args):
            planned.append(channel_id)
            if during:  # a user event lands while this pass plans
                env.services.publish("user.updated", {"channel": during.pop()})
            return await real_plan(channel_id, *args)

        monkeypatch.setattr(store, "plan", plan)
        for i in range(20):  # a burst of events in channel a
            env.services.publish("user.updated", {"channel": a, "id": i})
        [_clock_job, changes] = env.delivery.jobs()
        first, last = env.delivery._burst
        assert changes.due(last) == min(
            last + service_mod.CHANGES_QUIET, first + service_mod.CHANGES_MAX_WAIT
        )
        await changes.run()
        assert planned == [a]  # one pass, that channel only
        assert not env.delivery.dirty

        during.append(a)
        env.services.publish("users.changed", {"channel": a, "ids": [1]})
        await changes.run()
        assert planned == [a, a] and env.delivery.dirty  # the change during the pass is kept...
        await changes.run()
        assert planned == [a, a, a] and not env.delivery.dirty  # ...and gets its own pass
        env.services.publish("channel.updated", {"id": b})
        await changes.run()
        assert planned[-1] == b and b != a
        env.services.publish(
            "user.updated", SimpleNamespace(id=1, channel_id=b)
        )  # a store document (links)
        await changes.run()
        assert planned[-2:] == [b, b]


def test_a_burst_is_planned_once_quiet_and_never_later_than_the_max_wait():
    class Services:
        publish = staticmethod(lambda event, data: None)

    d = service_mod.Delivery(Services())
    changed = d.jobs()[1].due
    d._dirty, d._burst = {1}, (10.0, 10.5)
    assert changed(10.5) == 10.5 + service_mod.CHANGES_QUIET
    d._burst = (
        10.0,
        10.0 + service_mod.CHANGES_MAX_WAIT - 0.01,
    )  # still going: bounded by the first
    assert changed(10.99) == 10.0 + service_mod.CHANGES_MAX_WAIT
    d._dirty, d._burst = set(), None
    assert changed(12.0) == float("inf")


async def test_an_uncertain_sequence_email_declared_sent_lets_the_sequence_go_on(
    env_factory, smtp_sink
):
    """Planted bug: ``resolve`` leaves the user not due (their sequence waited on that email)."""
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "hal@example.com", tags=["welcome"], frequency="disabled")
        queued, _, _ = await env.store.run(
            store.plan, ch, env.clock.now(), schedule.decide, service_mod.sender_domain
        )
        assert queued == 1
        [claimed] = await env.store.run(store.claim, ch, env.clock.now(), 10)
        assert await env.store.run(store.mark_interrupted, env.clock.now()) == 1  # as after a crash
        await env.advance(3 * DAY)
        assert (
            smtp_sink.messages == []
        )  # nothing goes on while the welcome may or may not have left
        await env.store.run(store.resolve, claimed.id, "sent", env.clock.now())
        await env.delivery.run(None)
        # The welcome is not resent; the next one's 2 days counted from when it left: due already.
        assert smtp_sink.subjects("hal@example.com") == [TOOLS]


async def test_a_queued_message_of_an_unsubscribed_user_is_cancelled_by_the_next_pass(
    env_factory, smtp_sink
):
    """An admin resolves a failed message back to ``queued`` for a user who unsubscribed
    meanwhile: the next pass cancels it and sends nothing. Planted bug: the pass skips
    cancelling the queued mail of the unsubscribed users it reads."""
    from kuloo_daemon.vocabulary import OutboxState

    smtp_sink.refuse.add("una@example.com")
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        una = await env.user(ch, "una@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery.run(None)
        (failed,) = await env.outbox(ch, "failed")
        await env.update_user(una, unsubscribed=True)
        smtp_sink.refuse.clear()
        resolved = await env.store.run(store.resolve, failed.id, "resend", env.clock.now())
        assert resolved.state == OutboxState.QUEUED
        await env.delivery.run(None)
        (entry,) = await env.outbox(ch)
        assert (entry.id, entry.state) == (failed.id, OutboxState.CANCELLED)
        assert "unsubscribed" in entry.last_error
        assert smtp_sink.to("una@example.com") == []
