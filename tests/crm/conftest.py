"""Fixtures of the crm tests.

``sell_options``: a test that takes it runs once per value of the sellsim options whose real
answer is unknown and that the client must cope with (issue 9, options 4, 5, 6 and 8): the
defaults (``noop_write_bumps=true``, ``unknown_filter=ignore``,
``custom_date_read_format=us``, ``email_filter=cs``), then each other value on its own. The
fixture applies the options to the suite-wide ``sellsim`` (which resets them after the test).
"""

from __future__ import annotations

from typing import Any

import pytest

from sellsim.testing import SellSim

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "noop_write_bumps=false": {"noop_write_bumps": False},
    "unknown_filter=reject": {"unknown_filter": "reject"},
    "dates=iso": {"custom_date_read_format": "iso"},
    "dates=datetime": {"custom_date_read_format": "datetime"},
    "email_filter=ci": {"email_filter": "ci"},
}


@pytest.fixture(params=list(VARIANTS))
def sell_options(sellsim: SellSim, request: pytest.FixtureRequest) -> dict[str, Any]:
    options = VARIANTS[request.param]
    if options:
        sellsim.set_options(**options)
    return {**options}
