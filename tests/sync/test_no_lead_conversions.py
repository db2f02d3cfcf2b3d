"""The daemon never converts leads itself (issue 23.4): a second ``POST
/v2/lead_conversions`` for the same lead may create a second contact and deal instead of a
422, and Sell offers no idempotency key. ``SellClient`` has no ``convert_lead``, no daemon
code posts to that path, and every sync end-to-end test ends with zero such requests
(``_no_lead_conversions_posted`` in tests/sync/conftest.py, checked here)."""

from __future__ import annotations

import re
from pathlib import Path

import kuloo_daemon
from kuloo_daemon.crm.client import SellClient

DAEMON = Path(kuloo_daemon.__file__).parent


def test_the_client_cannot_convert_a_lead():
    """Planted bug: ``convert_lead`` restored on SellClient."""
    assert not hasattr(SellClient, "convert_lead")
    assert [name for name in dir(SellClient) if "convert" in name.lower()] == []


def test_no_daemon_code_posts_a_lead_conversion():
    """Planted bug: a ``request("POST", "/v2/lead_conversions", ...)`` anywhere in daemon/."""
    offenders = []
    for path in DAEMON.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"lead_conversions", text):
            window = text[max(0, m.start() - 200) : m.end() + 200]
            if re.search(r"[\"']POST[\"']", window):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{path.relative_to(DAEMON)}:{line}")
    assert offenders == []


def test_the_end_to_end_guard_counts_a_conversion_posted_across_counter_resets(
    sellsim, conversion_guard
):
    """The guard every sync end-to-end test ends with sees a POST made before the test
    reset sellsim's counters (as many tests do). Planted bugs: the guard reading only the
    counters left after the last reset; the path misspelt."""
    lead = sellsim.create_record("lead", {"last_name": "Conv"})
    sellsim.set_options(rate_per_second=1000)
    with sellsim.client() as api:
        r = api.post("/v2/lead_conversions", json={"data": {"lead_id": lead["id"]}})
        assert r.status_code == 200, r.text
    sellsim.reset_counters()
    assert conversion_guard.posted() == 1
    sellsim.convert_lead(sellsim.create_record("lead", {"last_name": "UI"})["id"])  # a Sell user
    assert conversion_guard.posted() == 1
    conversion_guard.expected = 1  # this test posted one on purpose
