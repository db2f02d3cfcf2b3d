"""The sync schedule: the pure "when next" rule, and the scheduler running it on business time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kuloo_daemon.clock import parse_instant
from kuloo_daemon.rules import schedule
from kuloo_daemon.vocabulary import Plan
from sellsim.seeds import default_seed

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def test_cadence_is_the_plan_s_unless_a_test_overrides_it():
    assert schedule.cadence(Plan.FREE) == timedelta(days=1)
    assert schedule.cadence(Plan.STARTER) == timedelta(hours=1)
    assert schedule.cadence(Plan.PRO) == schedule.cadence(Plan.ENTERPRISE) == FIVE
    assert schedule.cadence(Plan.FREE, 7) == timedelta(seconds=7)


def test_a_channel_never_synced_is_due_when_verified():
    assert schedule.next_sync_at(3, FIVE, None, T0) == T0


@given(
    st.integers(1, 10_000),
    st.datetimes(datetime(2026, 1, 2), datetime(2030, 1, 1), timezones=st.just(UTC)),
    st.sampled_from([FIVE, timedelta(hours=1), timedelta(days=1)]),
)
def test_next_run_is_the_first_slot_after_the_last_start(channel, last, every):
    due = schedule.next_sync_at(channel, every, last, T0)
    assert last < due <= last + every  # never overlapped, never later than one interval
    assert (due - schedule.EPOCH - schedule.phase(channel, every)) % every == timedelta(
        0
    )  # on its own slot


def test_channels_are_spread_over_the_interval():
    phases = sorted(schedule.phase(c, FIVE).total_seconds() for c in range(1, 11))
    gaps = [b - a for a, b in zip(phases, phases[1:], strict=False)]
    assert min(gaps) > 300 / 10 / 3  # no two of ten channels bunched together


def test_every_phase_lies_inside_one_interval():
    """Planted bugs: ``/ 1.0`` or ``% 2.0`` for ``% 1.0`` (a phase past the interval: a
    channel's first slot after a restart more than one interval away from its epoch)."""
    for every in (FIVE, timedelta(days=1)):
        phases = [schedule.phase(c, every) for c in range(1, 2001)]
        assert all(timedelta(0) <= p < every for p in phases)
        assert max(phases) > every * 0.99  # the whole interval is used
    assert schedule.phase(1, FIVE) == timedelta(seconds=schedule.GOLDEN * 300)


def test_advancing_the_manual_clock_past_a_channel_s_due_time_runs_its_sync(
    scheduled_kuloo, sellsim
):
    kuloo = scheduled_kuloo
    sellsim.load_seed(default_seed(leads=3))
    doc = kuloo.create_channel(plan="pro")
    # a channel is due as soon as it is verified: sync.run waits for that run or is it
    first = kuloo.call("sync.run", {"channel": doc["id"]})
    got = kuloo.call("channels.get", {"id": doc["id"]})
    assert got["sync"]["last_run"] == first and first["status"] == "ok"
    assert len(kuloo.users()) == 3
    nxt = parse_instant(got["sync"]["next_sync_at"])
    started = parse_instant(first["started_at"])
    assert started < nxt <= started + FIVE
    # just before the due time: no run; past it: the next run, finished when the call returns
    now = parse_instant(kuloo.call("status")["clock"]["now"])
    moved = kuloo.call("clock.advance", {"seconds": (nxt - now).total_seconds() - 1})
    assert "sync" not in moved["ran"]
    assert kuloo.call("channels.get", {"id": doc["id"]})["sync"]["last_run"]["id"] == first["id"]
    moved = kuloo.call("clock.advance", {"seconds": 2})
    assert "sync" in moved["ran"], moved
    second = kuloo.call("channels.get", {"id": doc["id"]})["sync"]["last_run"]
    assert second["id"] != first["id"] and second["status"] == "ok"
    assert parse_instant(second["started_at"]) >= nxt
    runs = kuloo.call("sync.runs", {"channel": doc["id"]})["runs"]
    # one run for the advance; before ``first`` the verification's own due run may have
    # finished already on a loaded machine (then sync.run made ``first``)
    assert [r["id"] for r in runs][:2] == [second["id"], first["id"]]
    assert len(runs) <= 3


def test_without_a_verified_channel_nothing_is_scheduled(scheduled_kuloo):
    moved = scheduled_kuloo.call("clock.advance", {"seconds": 7 * 86400})
    assert "sync" not in moved["ran"]
