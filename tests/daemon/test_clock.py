"""The business clock: wall and manual, sleeping until a time, forward-only moves."""

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio
import trio.testing

from kuloo_daemon.clock import ClockError, ManualClock, WallClock, iso, parse_instant

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def test_wall_clock_is_aware_utc():
    now = WallClock().now()
    assert now.tzinfo is UTC
    assert WallClock().mode == "wall"


async def test_wall_clock_sleep_until_a_past_time_returns_at_once():
    clock = WallClock()
    with trio.move_on_after(5) as scope:
        await clock.sleep_until(clock.now() - timedelta(seconds=1))
    assert not scope.cancelled_caught


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-01-01T09:00:00Z", START),
        ("2026-01-01T10:00:00+01:00", START),
        ("2026-01-01 09:00:00+00:00", START),
    ],
)
def test_parse_instant(text, expected):
    parsed = parse_instant(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["2026-01-01T09:00:00", "tomorrow", "", "2026-13-01T00:00:00Z"])
def test_parse_instant_refuses(text):
    with pytest.raises(ClockError):
        parse_instant(text)


def test_iso_renders_utc_with_z():
    assert (
        iso(datetime(2026, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))))
        == "2026-01-01T09:00:00Z"
    )
    assert iso(None) is None


async def test_manual_clock_stands_still_until_moved():
    clock = ManualClock(START)
    await trio.sleep(0.01)
    assert clock.now() == START and clock.mode == "manual"
    assert await clock.advance(90) == START + timedelta(seconds=90)
    assert await clock.set(START + timedelta(days=1)) == clock.now() == START + timedelta(days=1)
    assert clock.moves == 2


async def test_manual_clock_refuses_to_go_backwards():
    clock = ManualClock(START)
    with pytest.raises(ClockError, match="cannot go backwards: it is 2026-01-01T09:00:00Z"):
        await clock.set(START - timedelta(seconds=1))
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ClockError):
            await clock.advance(bad)
    with pytest.raises(ClockError):
        await clock.set(datetime(2026, 1, 2))  # naive
    assert clock.now() == START and clock.moves == 0
    assert await clock.set(START) == START  # standing still is allowed


async def test_each_move_is_persisted_first_and_a_failed_persist_does_not_move():
    saved = []

    async def persist(at):
        if at.year == 2027:
            raise OSError("disk full")
        saved.append(at)

    clock = ManualClock(START, persist)
    await clock.advance(60)
    assert saved == [START + timedelta(seconds=60)]
    with pytest.raises(OSError):
        await clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    assert clock.now() == START + timedelta(seconds=60)


async def test_concurrent_advances_add_up():
    async def slow_persist(_at):
        await trio.sleep(0.01)

    clock = ManualClock(START, slow_persist)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(clock.advance, 60)
    assert clock.now() == START + timedelta(minutes=5)


async def test_sleep_until_wakes_when_the_clock_passes_the_time_and_not_before():
    clock = ManualClock(START)
    woke = []

    async def sleeper(when):
        await clock.sleep_until(when)
        woke.append(when)

    a, b = START + timedelta(hours=1), START + timedelta(hours=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, b)
        nursery.start_soon(sleeper, a)
        await trio.testing.wait_all_tasks_blocked()
        await clock.advance(3599)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        await clock.advance(1)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == [a]
        await clock.set(START + timedelta(days=1))
    assert woke == [a, b]
