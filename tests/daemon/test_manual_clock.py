"""Business time under ``[clock] mode = "manual"``, end to end: the daemon as a subprocess,
moved through its control socket, against sellsim over loopback."""

import os

import pytest

from kuloo_daemon.control.client import ControlError
from sellsim.seeds import DEMO_TOKEN

START = "2026-01-05T09:00:00Z"
MANUAL = f'[clock]\nmode = "manual"\nstart = "{START}"\n'
TAGS = ["welcome", "onboarding", "upsell"]


@pytest.fixture
def manual(daemon_factory, sellsim):
    d = daemon_factory(MANUAL, sell=f'base_url = "{sellsim.base_url}"\nmax_attempts = 2\n')
    d.start()
    d.wait_for("READY=1")
    return d


def token_checks(sim) -> int:
    return sim.counters()["requests"].get("GET /v2/users/self", 0)


def test_advancing_the_clock_runs_the_work_due_at_that_time_once_and_promptly(manual, sellsim):
    """Verified channels are verified again after a day of business time (connection-reverify)."""
    with manual.client() as c:
        assert c.call("status")["clock"] == {"mode": "manual", "now": START}
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
        assert doc["connection"]["status"] == "verified"
        assert doc["connection"]["verified_at"] == doc["created_at"] == START
        checks = token_checks(sellsim)

        # The verified Free channel also syncs (once a day, on its own phase: 14:50 UTC for
        # channel 1); the 23 hours pass that slot once.
        moved = c.call("clock.advance", {"seconds": 23 * 3600})
        assert moved == {
            "now": "2026-01-06T08:00:00Z",
            "ran": ["sync"],
            "pending": [],
            "timed_out": False,
        }
        assert token_checks(sellsim) == checks  # not due yet

        # The reply comes once the due work has run: no waiting or polling in the test. The
        # daily retention job, first run at start, is due again at the same time.
        moved = c.call("clock.advance", {"seconds": 3600})
        assert moved == {
            "now": "2026-01-06T09:00:00Z",
            "ran": ["connection-reverify", "retention"],
            "pending": [],
            "timed_out": False,
        }
        assert token_checks(sellsim) == checks + 1  # once
        again = c.call("channels.get", {"id": doc["id"]})
        assert (
            again["connection"]["verified_at"]
            == again["connection"]["checked_at"]
            == "2026-01-06T09:00:00Z"
        )

        moved = c.call("clock.set", {"at": "2026-01-06T20:00:00+01:00"})
        assert moved["now"] == "2026-01-06T19:00:00Z" and moved["ran"] == ["sync"]  # the 14:50 slot
        assert token_checks(sellsim) == checks + 1


def test_the_manual_clock_only_goes_forwards_and_survives_a_restart(daemon_factory):
    d = daemon_factory(MANUAL).start()
    d.wait_for("READY=1")
    with d.client() as c:
        assert c.call("clock.advance", {"seconds": 90})["now"] == "2026-01-05T09:01:30Z"
        with pytest.raises(ControlError) as err:
            c.call("clock.set", {"at": START})
        assert err.value.code == "invalid_params" and "cannot go backwards" in err.value.message
        for bad in ({"seconds": -1}, {"seconds": "60"}, {}, {"seconds": 1, "timeout_seconds": -1}):
            with pytest.raises(ControlError) as err:
                c.call("clock.advance", bad)
            assert err.value.code == "invalid_params"
        with pytest.raises(ControlError) as err:
            c.call("clock.set", {"at": "2026-02-01T00:00:00"})  # no offset
        assert err.value.code == "invalid_params" and "time zone" in err.value.message
        assert c.call("status")["clock"]["now"] == "2026-01-05T09:01:30Z"
    assert d.stop() == 0
    os.unlink(d.notify_path)

    # `start` applies to a fresh store only: the stored time wins after a restart.
    again = daemon_factory(MANUAL).start()
    again.wait_for("READY=1")
    with again.client() as c:
        assert c.call("status")["clock"] == {"mode": "manual", "now": "2026-01-05T09:01:30Z"}


def test_the_clock_methods_exist_only_in_manual_mode(daemon):
    with daemon.client() as c:
        assert "clock.advance" not in c.server["methods"] and "clock.set" not in c.server["methods"]
        status = c.call("status")
        assert status["clock"]["mode"] == "wall" and status["clock"]["now"].endswith("Z")
        for method in ("clock.advance", "clock.set"):
            with pytest.raises(ControlError) as err:
                c.call(method, {"seconds": 60, "at": START})
            assert err.value.code == "unknown_method"
