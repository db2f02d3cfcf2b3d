"""users.* in-process on the Services floor: one store crossing per call, events for real changes only."""

import pytest

from kuloo_daemon.control import methods
from kuloo_daemon.control.context import Context
from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.services import open_services
from kuloo_daemon.store.users import User


def count_crossings(services) -> list[str]:
    """The use cases run through the store bridge from now on, by name."""
    crossed: list[str] = []
    run = services.store.run

    async def counting(fn, *args, **kwargs):
        crossed.append(fn.__name__)
        return await run(fn, *args, **kwargs)

    services.store.run = counting
    return crossed


MANUAL = {"mode": "manual", "start": "2026-01-05T09:00:00Z"}


async def test_each_users_method_crosses_once_and_publishes_only_changes(services_config):
    published: list[tuple[str, object]] = []
    async with open_services(
        services_config(clock=MANUAL), publish=lambda e, d: published.append((e, d))
    ) as services:
        context = Context(services, Delivery(services), "", lambda: 0)
        channel = (
            await methods.dispatch(
                context, "channels.create", {"name": "Acme", "sequential_tags": ["a"]}
            )
        )["id"]
        crossed = count_crossings(services)
        published.clear()

        user = await methods.dispatch(
            context, "users.add", {"channel": channel, "email": "ada@example.com"}
        )
        assert crossed == ["add"]
        assert [(e, d.id) for e, d in published] == [("user.updated", user["id"])]
        assert isinstance(published[0][1], User)  # typed; the server renders it

        for method, params, use_case in [
            ("users.get", {"id": user["id"]}, "get"),
            ("users.get", {"channel": channel, "email": "ADA@example.com"}, "get_by_email"),
            ("users.update", {"id": user["id"], "promo_tags": ["a"]}, "update"),
            ("users.update", {"id": user["id"], "promo_tags": ["a"]}, "update"),  # no change
            ("users.activity", {"id": user["id"]}, "mark_active"),
            ("users.activity", {"id": user["id"]}, "mark_active"),  # the same time: no change
            ("users.list", {"channel": channel, "promo": "a"}, "list_page"),
            ("users.audit", {"id": user["id"]}, "audit"),
        ]:
            crossed.clear()
            await methods.dispatch(context, method, params)
            assert crossed == [use_case], (method, params)
        assert [e for e, _ in published] == ["user.updated"] * 3  # add, the tag, the first activity

        crossed.clear()
        for method, params in [
            ("users.add", {"channel": channel}),
            ("users.update", {"id": 0}),
            ("users.list", {"channel": channel, "limit": 0}),
            ("users.audit", {}),
            ("users.activity", {"id": user["id"], "at": "soon"}),
        ]:
            with pytest.raises(ProtocolError) as err:
                await methods.dispatch(context, method, params)
            assert err.value.code == "invalid_params"
        assert crossed == []  # refused at the edge, before the store
