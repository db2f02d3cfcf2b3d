"""A pass that sends nothing still schedules its retry (issues 22 item 4 and 25 item 10).

The scheduler runs the ``delivery`` job when its ``due`` says so; on the manual clock there is
no 5-minute recheck, so a back-off the pass itself set must reach that ``due``, or the message
waits until something else happens to fall due.
"""

from __future__ import annotations

from datetime import timedelta

from kuloo_daemon.vocabulary import OutboxState

from .conftest import free_port

WELCOME = "Welcome to Kuloo Gardens"


def delivery_due(env):
    (job,) = [j for j in env.delivery.jobs() if j.name == "delivery"]
    return job.due(env.clock.now())


async def scheduled_pass_at_due(env) -> None:
    """What the scheduler loop does: move to the job's due time and run the job."""
    due = delivery_due(env)
    assert due is not None, "no pass scheduled: the waiting message would never be retried"
    await env.clock.advance((due - env.clock.now()).total_seconds())
    await env.delivery._scheduled()


async def test_a_greylisted_email_alone_is_retried_at_its_back_off(env_factory, smtp_sink):
    smtp_sink.tempfail.add("grey@example.com")
    async with env_factory(delivery={"retry_seconds": 5}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "grey@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery._scheduled()
        (entry,) = await env.outbox(ch)
        assert (entry.state, entry.attempts) == (OutboxState.QUEUED, 1)
        assert delivery_due(env) == entry.next_attempt_at == env.clock.now() + timedelta(seconds=5)
        smtp_sink.tempfail.clear()  # the greylist lets the second attempt through
        await scheduled_pass_at_due(env)
        assert smtp_sink.subjects("grey@example.com") == [WELCOME]
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.SENT]


async def test_a_relay_that_is_down_is_retried_at_its_back_off_not_at_the_recheck(
    env_factory, smtp_sink
):
    async with env_factory(smtp={"port": free_port()}, delivery={"retry_seconds": 5}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "a@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery._scheduled()
        (entry,) = await env.outbox(ch)
        # The relay's problem, not the message's: queued, no attempt held against it.
        assert (entry.state, entry.attempts) == (OutboxState.QUEUED, 0)
        assert (
            delivery_due(env)
            == env.delivery.relay.retry_at
            == env.clock.now() + timedelta(seconds=5)
        )
        await scheduled_pass_at_due(env)  # still down: the next back-off is scheduled too
        (entry,) = await env.outbox(ch)
        assert (entry.state, entry.attempts) == (OutboxState.QUEUED, 0)
        assert delivery_due(env) == env.clock.now() + timedelta(seconds=10)
