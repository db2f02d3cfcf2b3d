"""The daemon as a subprocess against sellsim over loopback, for the sync's end-to-end tests.

``kuloo`` starts the daemon on a manual clock (so no scheduled run interferes with the
test's own ``sync.run`` calls) with a raised request budget against sellsim, and gives
short helpers over the control protocol. Sell-side actions go through sellsim's API and
``/_sim/`` (what a Sell user does in the web UI).
"""

from __future__ import annotations

import pytest

from sellsim.seeds import DEMO_TOKEN

TAGS = ["welcome", "onboarding", "upsell"]
FAST = 2000  # requests per second: tests only (loopback)
CONVERSION_POST = "POST /v2/lead_conversions"


class ConversionGuard:
    """Counts ``POST /v2/lead_conversions`` on the suite's sellsim for one test, across the
    counter resets the test makes (the daemon never converts leads: a retried conversion may
    duplicate contacts and deals). A Sell user's conversion (``/_sim/ui/...``) is not one."""

    def __init__(self, sim) -> None:
        self.counters = sim.sim.counters  # the in-process simulator's counters
        self.before_resets = 0
        self.expected = 0  # a test that posts one on purpose says so

    def install(self, monkeypatch) -> None:
        original = self.counters.reset

        def reset() -> None:
            self.before_resets += self.counters.requests.get(CONVERSION_POST, 0)
            original()

        monkeypatch.setattr(self.counters, "reset", reset)

    def posted(self) -> int:
        return self.before_resets + self.counters.requests.get(CONVERSION_POST, 0)


@pytest.fixture
def conversion_guard(sellsim, monkeypatch) -> ConversionGuard:
    guard = ConversionGuard(sellsim)
    guard.install(monkeypatch)
    return guard


@pytest.fixture(autouse=True)
def _no_lead_conversions_posted(request):
    """Every sync end-to-end test that uses sellsim ends with zero
    ``POST /v2/lead_conversions`` (issue 23; tests/sync/test_no_lead_conversions.py)."""
    if "sellsim" not in request.fixturenames:
        yield
        return
    guard = request.getfixturevalue("conversion_guard")
    yield
    assert guard.posted() == guard.expected, (
        f"{guard.posted()} POST /v2/lead_conversions: the daemon must never convert leads"
    )


class Kuloo:
    def __init__(self, daemon, sim) -> None:
        self.d = daemon
        self.sim = sim
        self.channel: int | None = None

    def call(self, method: str, params: dict | None = None):
        from kuloo_daemon.control.client import ControlClient, ControlError

        with ControlClient(
            self.d.socket_path, timeout=180
        ) as c:  # a sync at Sell's real rate takes a while
            try:
                return c.call(method, params or {})
            except ControlError as exc:
                if exc.code == "internal":  # show why: the daemon's log ends with the traceback
                    raise AssertionError(
                        f"{method} failed inside the daemon:\n{self.d.log()[-4000:]}"
                    ) from exc
                raise

    def create_channel(self, plan: str = "pro", **extra) -> dict:
        doc = self.call(
            "channels.create",
            {
                "name": "Acme",
                "plan": plan,
                "sequential_tags": TAGS,
                "api_token": DEMO_TOKEN,
                **extra,
            },
        )
        assert doc["connection"]["status"] == "verified", doc["connection"]
        self.channel = doc["id"]
        return doc

    def sync(self) -> dict:
        run = self.call("sync.run", {"channel": self.channel})
        assert run["status"] in ("ok", "partial"), run
        return run

    def users(self, **filters) -> list[dict]:
        out, after = [], None
        while True:
            page = self.call(
                "users.list",
                {
                    "channel": self.channel,
                    "limit": 500,
                    **filters,
                    **({"after": after} if after else {}),
                },
            )
            out.extend(page["users"])
            after = page["next"]
            if after is None:
                return out

    def user(self, email: str) -> dict:
        return self.call("users.get", {"channel": self.channel, "email": email})

    def errors(self) -> list[dict]:
        return self.call("sync.errors", {"channel": self.channel})["errors"]

    # Sell side
    def leads(self) -> list[dict]:
        return self.sim.records("lead")

    def contacts(self) -> list[dict]:
        return self.sim.records("contact")

    def lead(self, lead_id: int) -> dict:
        return next(r for r in self.leads() if r["id"] == lead_id)

    def record(self, kind: str, rid: int) -> dict:
        return next(r for r in self.sim.records(kind) if r["id"] == rid)

    def writes(self) -> int:
        """PUTs and POSTs to leads and contacts since the last ``reset_counters``."""
        routes = self.sim.counters()["routes"]
        return sum(
            n
            for route, n in routes.items()
            if route.split()[0] in ("PUT", "POST") and ("/leads" in route or "/contacts" in route)
        )


@pytest.fixture
def make_kuloo(daemon_factory, sellsim):
    """``make_kuloo(rate=..., sub=...)``: a daemon on a manual clock against sellsim."""

    def make(
        rate: float = FAST,
        sub: str = "",
        attempts: int = 6,
        timeout: float = 5,
        scheduled: bool = False,
    ) -> Kuloo:
        d = daemon_factory(
            sub=sub,
            extra_config=f'[clock]\nmode = "manual"\n[sync]\nscheduled = {str(scheduled).lower()}\n',
            sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = {rate}\nmax_attempts = {attempts}\n'
            f"timeout_seconds = {timeout}\nverify_timeout_seconds = 30\n",
        )
        d.start()
        d.wait_for("READY=1")
        return Kuloo(d, sellsim)

    return make


@pytest.fixture
def scheduled_kuloo(make_kuloo, sellsim):
    sellsim.set_options(rate_per_second=FAST * 2, rate_per_hour=10**9)
    return make_kuloo(scheduled=True)


@pytest.fixture
def kuloo(make_kuloo, sellsim):
    sellsim.set_options(rate_per_second=FAST * 2, rate_per_hour=10**9)
    return make_kuloo()
