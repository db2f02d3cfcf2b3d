"""The ``sellsim`` pytest fixture: a fresh-state ``SellSim`` per test.

One simulator serves the whole session (default seed, default options: the real 10 req/s
limit); each test gets it reset to that seed with no faults, zero counters and default options.
Enabled for the whole suite by ``pytest_plugins = ["sellsim.pytest_plugin"]`` in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import SellSim


@pytest.fixture(scope="session")
def _sellsim_server() -> Iterator[SellSim]:
    with SellSim() as sim:
        yield sim


@pytest.fixture
def sellsim(_sellsim_server: SellSim) -> Iterator[SellSim]:
    sim = _sellsim_server
    sim.load_seed(sim.seed)
    sim.reset()
    yield sim
