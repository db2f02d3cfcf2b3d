"""The client's ``on_request`` callback (the daemon's metrics): one call per attempt, with the
method, the status or failure, the wait on the rate budget and whether it is retried — never
a path, a query or the token. Against the real sellsim over loopback."""

from __future__ import annotations

from kuloo_daemon.crm import errors as E
from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.crm.pool import ClientPool
from kuloo_daemon.secrets import Secret


def client(sim, calls: list, **kw) -> SellClient:
    return SellClient(
        sim.base_url,
        Secret(sim.token),
        budget=kw.pop("budget", RateBudget(500.0)),
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=2.0,
        on_request=lambda *call: calls.append(call),
        **kw,
    )


async def test_each_attempt_is_reported_with_its_status_and_retry(sellsim):
    sellsim.set_options(rate_per_second=1000)
    sellsim.set_faults([{"kind": "429", "path": "/v2/users/self", "count": 2}])
    calls: list = []
    async with client(sellsim, calls) as sell:
        await sell.users_self()
    assert [(m, s, r) for m, s, _w, r in calls] == [
        ("GET", "429", True),
        ("GET", "429", True),
        ("GET", "200", False),
    ]
    assert all(isinstance(w, float) and w >= 0 for _m, _s, w, _r in calls)


async def test_the_last_attempt_is_not_retried_and_a_network_failure_is_named(sellsim):
    sellsim.set_options(rate_per_second=1000)
    sellsim.set_faults([{"kind": "503", "path": "/v2/users/self"}])
    calls: list = []
    async with client(sellsim, calls, max_attempts=2) as sell:
        try:
            await sell.users_self()
        except E.ServerError:
            pass
    assert [(m, s, r) for m, s, _w, r in calls] == [("GET", "503", True), ("GET", "503", False)]
    calls.clear()
    async with SellClient(
        "http://127.0.0.1:9",
        Secret(sellsim.token),
        max_attempts=1,
        on_request=lambda *call: calls.append(call),
    ) as sell:
        try:
            await sell.users_self()
        except E.NetworkError:
            pass
    assert [(m, s, r) for m, s, _w, r in calls] == [("GET", "connect", False)]


async def test_time_waiting_on_the_rate_budget_is_measured(sellsim):
    sellsim.set_options(rate_per_second=1000)
    calls: list = []
    async with client(sellsim, calls, budget=RateBudget(5.0)) as sell:
        for _ in range(3):
            await sell.users_self()
    waits = [w for _m, _s, w, _r in calls]
    assert waits[0] < 0.1 and sum(waits[1:]) >= 0.3  # 5/s: each later request waits ~0.2 s


async def test_the_pool_hands_the_callback_to_every_client(sellsim):
    sellsim.set_options(rate_per_second=1000)
    calls: list = []
    async with ClientPool(
        sellsim.base_url, rate_per_second=500, on_request=lambda *call: calls.append(call)
    ) as pool:
        async with pool.use(Secret(sellsim.token)) as sell:
            await sell.users_self()
    assert [(m, s) for m, s, _w, _r in calls] == [("GET", "200")]
