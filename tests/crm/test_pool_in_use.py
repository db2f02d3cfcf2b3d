"""Replacing a token while a check runs on it: the pooled client stays open for that check.

``channels.update`` with a new token closed the old token's pooled client under a
``channels.verify`` still running on it (``AttributeError: 'NoneType' object has no
attribute 'request'`` → ``internal``). A client in use is now closed when its last user
is done, and the check whose token was replaced meanwhile ends quietly.
"""

import threading
import time

import trio

from kuloo_daemon.control.client import ControlError
from kuloo_daemon.crm.pool import ClientPool
from kuloo_daemon.secrets import Secret, mask
from sellsim.seeds import DEMO_TOKEN

TAGS = ["welcome", "onboarding", "upsell"]
NEW_TOKEN = "a-replacement-token-sell-does-not-know-" + "9" * 25


def _background(d, method, params):
    box: dict = {}

    def call():
        with d.client() as c:
            try:
                box["result"] = c.call(method, params)
            except ControlError as exc:
                box["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, box


def test_a_token_replaced_during_a_verify(daemon_factory, sellsim):
    d = daemon_factory(
        sell=f'base_url = "{sellsim.base_url}"\nmax_attempts = 3\nverify_timeout_seconds = 30\n'
    )
    d.start()
    d.wait_for("READY=1")
    with d.client() as c:
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
        assert doc["connection"]["status"] == "verified"
    before = sellsim.counters()["requests"].get("GET /v2/users/self", 0)
    sellsim.set_faults([{"kind": "slow", "delay": 3, "path": "/v2/users/self", "count": 1}])
    thread, box = _background(d, "channels.verify", {"id": doc["id"]})
    while (
        sellsim.counters()["requests"].get("GET /v2/users/self", 0) <= before
    ):  # the verify is in flight
        time.sleep(0.05)
    with d.client() as c:
        c.call("subscribe")
        updated = c.call("channels.update", {"id": doc["id"], "api_token": NEW_TOKEN})
        assert updated["connection"]["status"] == "needs_new_token", updated["connection"]
        thread.join(30)
        assert "error" not in box, box  # the moot verify ends quietly, with the current document
        assert box["result"]["api_token"] == mask(NEW_TOKEN)
        assert box["result"]["connection"]["status"] == "needs_new_token"
        assert c.call("status")["pid"] == d.proc.pid
    assert d.stop() == 0
    log = d.log()
    assert (
        "AttributeError" not in log
        and "control method failed" not in log
        and '"internal"' not in log
    )


async def test_discard_waits_for_the_last_user(sellsim):
    token = Secret(sellsim.token)
    async with ClientPool(sellsim.base_url, rate_per_second=50) as pool:
        async with pool.use(token) as first:
            async with pool.use(token) as second:
                assert first is second
                assert await pool.discard(token) is True  # the token was replaced
                assert len(pool) == 0 and not first.closed
                assert (await second.users_self())["email"]
            assert not first.closed  # one user left
            assert (await first.users_self())["email"]
            async with pool.use(token) as fresh:  # a new user gets a new client
                assert fresh is not first
        assert first.closed and not fresh.closed
        assert await pool.discard(token) is True
        assert fresh.closed


async def test_a_user_that_fails_still_releases_its_client(sellsim):
    token = Secret(sellsim.token)
    async with ClientPool(sellsim.base_url) as pool:
        try:
            async with pool.use(token) as sell:
                await pool.discard(token)
                raise trio.TooSlowError
        except trio.TooSlowError:
            pass
        assert sell.closed
