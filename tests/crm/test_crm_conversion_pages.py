"""Lead conversions listed page by page: newest first, past page 1 by Sell's cursor."""

from __future__ import annotations

import pytest
import trio

from kuloo_daemon.crm import errors as E

from .test_crm_sellsim import fast_client


async def test_conversion_pages_follow_the_cursor_newest_first(sellsim):
    """Five conversions, two a page: three pages, newest first, every conversion once.

    Planted bugs: the cursor sent together with ``page=1`` (Sell refuses the pair: 400);
    per_page not sent (Sell's default of 25: one page)."""
    sellsim.set_options(rate_per_second=1000)
    made = []
    for i in range(5):
        lead = await trio.to_thread.run_sync(
            lambda i=i: sellsim.create_record("lead", {"last_name": f"L{i}"})
        )
        made.append(
            (await trio.to_thread.run_sync(lambda lead=lead: sellsim.convert_lead(lead["id"])))[
                "id"
            ]
        )
    sellsim.reset_counters()
    async with fast_client(sellsim) as sell:
        pages = [[c.id for c in page] async for page in sell.lead_conversion_pages(per_page=2)]
        assert pages == [sorted(made, reverse=True)[i : i + 2] for i in (0, 2, 4)]
        # every matching conversion, through the cursor too
        assert [c.id for c in await sell.lead_conversions()] == sorted(made, reverse=True)
        with pytest.raises(E.BadRequestError):  # Sell's limit on this endpoint: 200
            async for _page in sell.lead_conversion_pages(per_page=201):
                pass
    routes = sellsim.counters()["routes"]
    assert (
        sum(n for r, n in routes.items() if r.startswith("GET") and "lead_conversions" in r)
        == 3 + 1 + 1
    )
