"""The channel connection step: token and custom fields checked when the channel is saved.

The daemon runs as a subprocess against sellsim over loopback.
"""

import json
import signal

import pytest
import trio

from kuloo_daemon.control import render
from kuloo_daemon.control.client import ControlError
from kuloo_daemon.crm.errors import AuthenticationError
from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.sync import connection
from sellsim.seeds import DEMO_TOKEN, default_seed

TAGS = ["welcome", "onboarding", "upsell"]
OTHER_TOKEN = "second-token-for-the-same-account-".ljust(64, "7")


@pytest.fixture
def connected(daemon_factory, sellsim):
    d = daemon_factory(
        sell=f'base_url = "{sellsim.base_url}"\nrecheck_seconds = 1\nmax_attempts = 2\n'
        "verify_timeout_seconds = 20\n"
    )
    d.start()
    d.wait_for("READY=1")
    return d


def field_id(sim, type_, name):
    # Read sellsim's state, not the API: the token's 10/s belongs to the daemon under test.
    definitions = sim.state()["accounts"][0]["definitions"][type_]
    return next(d["id"] for d in definitions if d["name"] == name)


def test_a_correct_setup_is_verified_when_the_channel_is_saved(connected, sellsim):
    with connected.client() as c:
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
        assert doc["connection"]["status"] == "verified", doc["connection"]
        assert doc["connection"]["problems"] == []
        assert doc["connection"]["verified_at"]
        again = c.call("channels.verify", {"id": doc["id"]})
        assert again["connection"]["status"] == "verified"
    assert DEMO_TOKEN not in connected.log()


def test_every_problem_is_listed_and_fixing_it_in_sell_clears_them(connected, sellsim):
    sellsim.edit_custom_field("lead", field_id(sellsim, "lead", "Promo"), {"name": "promo"})
    sellsim.delete_custom_field("contact", field_id(sellsim, "contact", "Last active"))
    sellsim.add_custom_field(
        "contact", {"name": "Last active", "type": "string", "for_contact": True}
    )
    with connected.client() as c:
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
        conn = doc["connection"]
        assert conn["status"] == "failed"
        assert conn["problems"] == [
            'Leads: field "promo" not found — did you mean "Promo"? (case and spaces matter)',
            'Contacts: "Last active" is a string field; it must be a date',
        ], conn
        # the channel's tags are the Promo choices: a tag Sell lacks is a problem too
        sellsim.edit_custom_field("lead", field_id(sellsim, "lead", "promo"), {"name": "Promo"})
        sellsim.delete_custom_field("contact", field_id(sellsim, "contact", "Last active"))
        sellsim.add_custom_field(
            "contact", {"name": "Last active", "type": "date", "for_contact": True}
        )
        doc = c.call("channels.update", {"id": doc["id"], "sequential_tags": [*TAGS, "vip"]})
        assert doc["connection"]["status"] == "failed"
        assert doc["connection"]["problems"] and all(
            '"vip"' in p for p in doc["connection"]["problems"]
        )
        doc = c.call("channels.update", {"id": doc["id"], "sequential_tags": TAGS})
        assert doc["connection"] == {**doc["connection"], "status": "verified", "problems": []}


def test_an_invalid_token_is_saved_but_marked(connected, sellsim):
    with connected.client() as c:
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": "x" * 64}
        )
        assert doc["connection"]["status"] == "needs_new_token"
        assert (
            "rejected" in doc["connection"]["problems"][0]
            and "401" in doc["connection"]["problems"][0]
        )
        assert doc["api_token"] == "****xxxx"
        # a new token fixes it; removing it stops everything
        doc = c.call("channels.update", {"id": doc["id"], "api_token": DEMO_TOKEN})
        assert doc["connection"]["status"] == "verified"
        doc = c.call("channels.update", {"id": doc["id"], "api_token": None})
        assert doc["connection"]["status"] == "none" and doc["api_token"] == ""
        with pytest.raises(ControlError) as err:
            c.call("channels.verify", {"id": doc["id"]})
        assert (
            err.value.code == "invalid_params" and "no Zendesk Sell API token" in err.value.message
        )


def test_sell_down_leaves_the_channel_unverified_then_it_is_rechecked(connected, sellsim):
    sellsim.set_faults([{"kind": "503", "path": "/v2/*"}])
    with connected.client() as c:
        c.call("subscribe")
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
        assert doc["connection"]["status"] == "unverified"
        assert "verify again later" in doc["connection"]["problems"][0]
        sellsim.clear_faults()
        # the scheduler checks it again by itself (recheck_seconds = 1)
        while True:
            message = c.read_message()
            if (
                getattr(message, "event", None) == "channel.updated"
                and message.data["connection"]["status"] == "verified"
            ):
                break
        assert c.call("channels.get", {"id": doc["id"]})["connection"]["status"] == "verified"


def test_config_reload_and_stop_with_a_connected_channel(connected, sellsim):
    with connected.client() as c:
        c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
    connected.signal(signal.SIGTERM)
    assert connected.proc.wait(10) == 0


async def test_a_401_mid_run_marks_only_that_channel(services_config, sellsim):
    """Work on channel A gets a 401 halfway through paging; only A stops, with a clear reason."""
    seed = default_seed(leads=250)
    seed["accounts"][0]["tokens"].append({"token": OTHER_TOKEN, "name": "second"})
    sellsim.load_seed(seed)
    sellsim.set_options(rate_per_second=1000)
    config = services_config(sell={"base_url": sellsim.base_url, "requests_per_second": 10})
    async with open_services(config) as services:
        store, now = services.store, services.clock.now()
        a = await store.run(
            channel_store.create, {"name": "A", "sequential_tags": TAGS}, Secret(DEMO_TOKEN), now
        )
        b = await store.run(
            channel_store.create, {"name": "B", "sequential_tags": TAGS}, Secret(OTHER_TOKEN), now
        )
        for created in (a, b):
            assert (
                await connection.check_channel(services, created.check)
            ).connection.status == "verified"

        sell_a = await services.sell_pool.client(Secret(DEMO_TOKEN))
        seen = 0
        with pytest.raises(AuthenticationError) as err:
            async for _lead in sell_a.list_leads():
                seen += 1
                if seen == 120:  # the owner revokes the token in Sell mid-run
                    revoked = default_seed(leads=250)
                    revoked["accounts"][0]["tokens"] = [{"token": OTHER_TOKEN, "name": "second"}]
                    await trio.to_thread.run_sync(sellsim.load_seed, revoked)
        assert 100 <= seen < 250
        assert DEMO_TOKEN not in str(err.value)
        doc = await connection.token_rejected(services, a.channel.id, Secret(DEMO_TOKEN), err.value)
        assert doc.connection.status == "needs_new_token"
        assert "paste a new token" in doc.connection.problems[0]
        # B is untouched and its client keeps working
        doc_b = await store.run(channel_store.get, b.channel.id)
        assert doc_b.connection.status == "verified"
        assert (await connection.check_channel(services, b.check)).connection.status == "verified"
        assert json.dumps(render.channel(doc)).count("****") == 1


def _verify_in_background(d, channel_id):
    import threading

    box = {}

    def call():
        with d.client() as c:
            try:
                box["result"] = c.call("channels.verify", {"id": channel_id})
            except ControlError as exc:
                box["error"] = exc
            except ConnectionError as exc:
                box["closed"] = exc

    t = threading.Thread(target=call)
    t.start()
    return t, box


@pytest.mark.parametrize("signals, at_most", [(1, 8.0), (2, 2.0)])
def test_stop_with_a_sell_call_in_flight(connected, sellsim, signals, at_most):
    """SIGTERM drains for the grace period (3 s here); a second SIGTERM cancels at once."""
    import time

    with connected.client() as c:
        doc = c.call(
            "channels.create", {"name": "Acme", "sequential_tags": TAGS, "api_token": DEMO_TOKEN}
        )
    sellsim.set_faults([{"kind": "slow", "delay": 30, "path": "/v2/users/self"}])
    thread, box = _verify_in_background(connected, doc["id"])
    while (
        sellsim.counters()["requests"].get("GET /v2/users/self", 0) < 2
    ):  # the verify is in flight
        time.sleep(0.05)
    started = time.monotonic()
    for _ in range(signals):
        connected.signal(signal.SIGTERM)
        time.sleep(0.2)
    assert connected.proc.wait(15) == 0
    took = time.monotonic() - started
    thread.join(5)
    assert took < at_most
    if signals == 1:
        assert took >= 2.5, "the in-flight request must get its grace period"
    assert box["error"].code == "unavailable" and "stopping" in box["error"].message
