"""Fixtures for the sellsim conformance suite.

``sellsim`` (fresh-state SellSim, real limits) comes from ``sellsim.pytest_plugin`` through
tests/conftest.py. ``sim`` is the same server with the rate limit raised, for tests of every
other feature; ``api`` is an httpx client for it with the demo token.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sellsim.testing import SellSim


@pytest.fixture
def sim(sellsim: SellSim) -> Iterator[SellSim]:
    sellsim.set_options(rate_per_second=100_000, rate_per_hour=10**9)
    yield sellsim


@pytest.fixture
def api(sim: SellSim) -> Iterator[httpx.Client]:
    with sim.client() as client:
        yield client
