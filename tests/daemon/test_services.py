"""The Services floor in-process: real store file, real sellsim, the control methods' use cases."""

from datetime import UTC, datetime

import pytest
import trio

from kuloo_daemon.control import methods
from kuloo_daemon.control.context import Context
from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.sync import connection
from sellsim.seeds import DEMO_TOKEN

TAGS = ["welcome", "onboarding", "upsell"]
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def count_crossings(services) -> list[str]:
    crossed: list[str] = []
    run = services.store.run

    async def counting(fn, *args, **kwargs):
        crossed.append(fn.__name__)
        return await run(fn, *args, **kwargs)

    services.store.run = counting
    return crossed


async def test_each_channel_use_case_crosses_the_store_bridge_once_per_unit_of_work(
    services_config, sellsim
):
    config = services_config(
        sell={"base_url": sellsim.base_url},
        clock={"mode": "manual", "start": "2026-01-05T09:00:00Z"},
    )
    async with open_services(config) as services:
        context = Context(services, Delivery(services), "", lambda: 0)
        crossed = count_crossings(services)
        doc = await methods.dispatch(
            context, "channels.create", {"name": "Acme", "sequential_tags": TAGS}
        )
        assert crossed == ["create"]
        assert doc["created_at"] == doc["updated_at"] == "2026-01-05T09:00:00Z"  # the clock's time

        crossed.clear()
        doc = await methods.dispatch(
            context, "channels.update", {"id": doc["id"], "plan": "pro", "api_token": DEMO_TOKEN}
        )
        assert doc["connection"]["status"] == "verified" and doc["plan"] == "pro"
        # the edit (which also says what to check), then the check's record: not 4 or 5
        assert crossed == ["update", "set_connection"]
        assert len(services.sell_pool) == 1

        await services.clock.advance(60)
        assert crossed[-1] == "save"  # the manual time is persisted
        crossed.clear()
        doc = await methods.dispatch(
            context, "channels.update", {"id": doc["id"], "api_token": None}
        )
        assert crossed == ["update"]
        assert doc["connection"]["status"] == "none" and doc["updated_at"] == "2026-01-05T09:01:00Z"
        assert (
            len(services.sell_pool) == 0
        )  # the released token's client is closed, no extra crossing

        crossed.clear()
        with pytest.raises(ProtocolError) as err:
            await methods.dispatch(context, "channels.verify", {"id": doc["id"]})
        assert err.value.code == "invalid_params" and crossed == ["check_inputs"]


async def test_a_token_still_used_by_another_channel_keeps_its_client(services_config, sellsim):
    async with open_services(services_config(sell={"base_url": sellsim.base_url})) as services:
        context = Context(services, Delivery(services), "", lambda: 0)
        a = await methods.dispatch(
            context, "channels.create", {"name": "A", "api_token": DEMO_TOKEN}
        )
        await methods.dispatch(context, "channels.create", {"name": "B", "api_token": DEMO_TOKEN})
        assert len(services.sell_pool) == 1
        await methods.dispatch(context, "channels.update", {"id": a["id"], "api_token": None})
        assert len(services.sell_pool) == 1


def test_the_token_is_a_secret_from_the_moment_it_is_parsed():
    token = "t0k3n" * 8
    edit = methods.check_channel_fields({"name": "x", "api_token": f"  {token} "}, creating=True)
    assert isinstance(edit.token, Secret) and edit.token.reveal() == token and edit.set_token
    assert token not in repr(edit)
    removal = methods.check_channel_fields({"api_token": None}, creating=False)
    assert removal.set_token and removal.token is None
    assert not methods.check_channel_fields({"plan": "pro"}, creating=False).set_token
    with pytest.raises(ProtocolError) as err:
        methods.check_channel_fields({"api_token": "short"}, creating=False)
    assert "20 to 512 printable ASCII characters" in err.value.message
    assert "short" not in err.value.message


@pytest.mark.parametrize(
    "token",
    [
        "t0k3n" * 7 + "\u00e9",  # non-ASCII: stored, then the check failed as `internal`
        "t0k3n" * 7 + "\u00a0x",  # a no-break space
        "t0k3n" * 7 + "\x7f",  # DEL
        "t0k3n" * 3 + "\x01" + "t0k3n" * 3,  # a control character
        "t0k3n" * 3 + "\u2028" + "t0k3n" * 3,  # a line separator
        "t0k3n tok3n t0k3n t0k3n",
        "x" * 19,
        "x" * 513,
    ],
)
def test_a_token_that_is_not_printable_ascii_is_refused_on_entry(token):
    """Issue 20 item 12. Planted bugs: the ASCII rule dropped (``isspace`` only), the
    bounds moved, the error text losing the rule or echoing the token."""
    with pytest.raises(ProtocolError) as err:
        methods.check_channel_fields({"api_token": token}, creating=False)
    assert err.value.code == "invalid_params"
    assert "20 to 512 printable ASCII characters, no spaces" in err.value.message
    assert token.strip() not in err.value.message


@pytest.mark.parametrize("token", ["x" * 20, "x" * 512, "!~" * 10, DEMO_TOKEN])
def test_printable_ascii_tokens_at_the_bounds_are_accepted(token):
    edit = methods.check_channel_fields({"api_token": token}, creating=False)
    assert edit.token.reveal() == token


async def test_the_scheduled_recheck_honours_verify_timeout_seconds(services_config, sellsim):
    """Sell hangs: the scheduler's re-check gives up after sell.verify_timeout_seconds (1 s here)."""
    config = services_config(
        sell={
            "base_url": sellsim.base_url,
            "verify_timeout_seconds": 1,
            "recheck_seconds": 1,
            "timeout_seconds": 60,
            "max_attempts": 1,
        }
    )
    async with open_services(config) as services:
        created = await services.store.run(
            channel_store.create,
            {"name": "Acme", "sequential_tags": TAGS},
            Secret(DEMO_TOKEN),
            services.clock.now(),
        )
        assert created.channel.connection.status == "unverified"
        recheck = next(job for job in connection.jobs(services) if job.name == "connection-recheck")
        await recheck.run()  # first sight: it was just set, so it waits recheck_seconds
        await trio.sleep(1.1)
        sellsim.set_faults([{"kind": "slow", "delay": 30, "path": "/v2/users/self"}])
        with trio.fail_after(15):  # the old default would have waited 60 s
            await recheck.run()
        doc = await services.store.run(channel_store.get, created.channel.id)
        assert doc.connection.status == "unverified"
        assert doc.connection.problems == (
            "Zendesk Sell did not answer within 1 s — verify again later.",
        )
