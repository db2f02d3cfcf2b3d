"""SellClient against httpx.MockTransport: envelope, paging, retry policy, typed errors."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from kuloo_daemon import __version__
from kuloo_daemon.crm import errors as E
from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import (
    SellClient,
    flatten_params,
    parse_retry_after,
    retry_delay,
    should_retry,
)
from kuloo_daemon.secrets import Secret

TOKEN = "a1" * 32


def make(handler, **kw) -> SellClient:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    kw.setdefault("budget", RateBudget(1000.0))
    return SellClient(
        "https://sell.test", Secret(TOKEN), transport=httpx.MockTransport(handler), **kw
    )


def lead_json(i: int, **extra) -> dict:
    return {"id": i, "last_name": f"L{i}", "updated_at": "2026-01-01T00:00:00Z", **extra}


def collection(items, next_page=None) -> dict:
    links = {"next_page": next_page} if next_page else {}
    return {"items": [{"data": d, "meta": {"type": "lead"}} for d in items],
            "meta": {"type": "collection", "count": len(items), "links": links}}  # fmt: skip


# ------------------------------------------------------------------ pure policy


def test_retry_policy_table():
    for status in (429, 500, 502, 503, 504):
        assert should_retry(status, None, idempotent=True)
    assert should_retry(429, None, idempotent=False)
    assert should_retry(503, None, idempotent=False)
    for status in (500, 502, 504):
        assert not should_retry(status, None, idempotent=False)
    for status in (400, 401, 403, 404, 422):
        assert not should_retry(status, None, idempotent=True)
    assert should_retry(None, "connect", idempotent=False)
    assert should_retry(None, "timeout", idempotent=True)
    assert not should_retry(None, "timeout", idempotent=False)
    # a protocol error (a reply past the limits, or not HTTP) is treated like a 500
    assert should_retry(None, "protocol", idempotent=True)
    assert not should_retry(None, "protocol", idempotent=False)


def test_backoff_grows_is_capped_and_jittered():
    lo = [retry_delay(a, base=0.5, cap=30, rand=lambda: 0.0) for a in range(1, 10)]
    hi = [retry_delay(a, base=0.5, cap=30, rand=lambda: 1.0) for a in range(1, 10)]
    assert lo[:4] == [0.25, 0.5, 1.0, 2.0]
    assert hi[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(hi) == 30
    assert retry_delay(1, base=0.5, cap=30, retry_after=7, rand=lambda: 0.0) == 7
    assert retry_delay(1, base=0.5, cap=30, retry_after=10_000, rand=lambda: 0.0) == 120


def test_retry_after_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_flatten_params():
    assert flatten_params(
        {"custom_fields": {"KulooId": "k1"}, "ids": [1, 2], "x": None, "is_organization": False}
    ) == {  # fmt: skip
        "custom_fields[KulooId]": "k1",
        "ids": "1,2",
        "is_organization": "false",
    }


# ------------------------------------------------------------------ requests


async def test_headers_envelope_and_filters():
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        if request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(
                200, json={"data": {"id": 5, **body["data"]}, "meta": {"type": "lead"}}
            )
        return httpx.Response(200, json=collection([lead_json(1, custom_fields={"KulooId": "k1"})]))

    async with make(handler) as sell:
        leads = [lead async for lead in sell.list_leads(custom_fields={"KulooId": "k1"})]
        created = await sell.create_lead({"last_name": "X", "custom_fields": {"Source": "admin"}})
    assert leads[0].id == 1 and leads[0].custom_fields == {"KulooId": "k1"}
    assert created.id == 5 and created.custom_fields == {"Source": "admin"}
    get = seen[0]
    assert get.headers["authorization"] == f"Bearer {TOKEN}"
    assert get.headers["user-agent"] == f"kuloo-sync/{__version__}"
    assert get.headers["accept"] == "application/json"
    assert get.url.params["custom_fields[KulooId]"] == "k1"
    assert get.url.params["per_page"] == "100"
    assert json.loads(seen[1].content) == {
        "data": {"last_name": "X", "custom_fields": {"Source": "admin"}}
    }
    assert seen[1].headers["content-type"] == "application/json"


async def test_requests_built_whole_carry_what_build_request_would_add():
    """SellClient builds each request itself (no per-request merging by ``build_request``):
    the request still carries the timeouts of every phase (a connect timeout, shorter than
    the attempt's, is what says "nothing was sent"), Host, Content-Length, the compact JSON
    body httpx would send, a base URL's path prefix, and a request's own header replacing a
    default one."""
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return httpx.Response(200, json={"data": {"id": 7}, "meta": {"type": "lead"}})

    sell = SellClient("https://sell.test/prefix/", Secret(TOKEN), transport=httpx.MockTransport(handler),
                      budget=RateBudget(1000.0), timeout=7.5)  # fmt: skip
    async with sell:
        await sell.update_lead(7, {"first_name": "Zoë", "custom_fields": {"KulooId": "k7"}})
        await sell.request(
            "GET", "/v2/leads", params={"ids": [1, 2]}, headers={"Accept": "text/plain"}
        )
    put, get = seen
    assert put.extensions["timeout"] == {"connect": 3.75, "read": 7.5, "write": 7.5, "pool": 3.75}
    assert str(put.url) == "https://sell.test/prefix/v2/leads/7"
    assert put.headers["host"] == "sell.test"
    assert put.content == '{"data":{"first_name":"Zoë","custom_fields":{"KulooId":"k7"}}}'.encode()
    assert put.headers["content-length"] == str(len(put.content))
    assert put.headers["content-type"] == "application/json"
    assert put.headers["connection"] == "keep-alive"
    assert get.url.path == "/prefix/v2/leads" and get.url.params["ids"] == "1,2"
    assert get.headers.get_list("accept") == ["text/plain"]
    assert "content-type" not in get.headers and get.headers["authorization"] == f"Bearer {TOKEN}"


async def test_paging_stops_on_missing_next_page_and_never_follows_other_hosts():
    calls = []

    def handler(request: httpx.Request):
        page = int(request.url.params.get("page", "1"))
        calls.append((request.url.host, page))
        if page == 1:
            return httpx.Response(
                200,
                json=collection(
                    [lead_json(1)], "https://evil.example/v2/leads?page=2&per_page=100"
                ),
            )
        return httpx.Response(200, json=collection([lead_json(2)]))

    async with make(handler) as sell:
        ids = [lead.id async for lead in sell.list_leads()]
    assert ids == [1, 2]
    assert calls == [("sell.test", 1), ("sell.test", 2)]


async def test_paging_stops_on_empty_page_even_with_next_page():
    calls = []

    def handler(request: httpx.Request):
        page = int(request.url.params["page"])
        calls.append(page)
        items = [lead_json(page)] if page < 3 else []
        return httpx.Response(
            200, json=collection(items, f"https://sell.test/v2/leads?page={page + 1}")
        )

    async with make(handler) as sell:
        ids = [lead.id async for lead in sell.list_leads()]
    assert ids == [1, 2]
    assert calls == [1, 2, 3]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_get_retries_then_succeeds_with_one_log_line_per_retry(status):
    count = 0

    def handler(request: httpx.Request):
        nonlocal count
        count += 1
        if count <= 2:
            return httpx.Response(status, text="<html><body>busy</body></html>")
        return httpx.Response(200, json={"data": {"id": 1, "name": "Owner"}})

    with capture_logs() as logs:
        async with make(handler) as sell:
            user = await sell.get("/v2/users/self", secret_param="hidden-value")
    assert user["name"] == "Owner"
    assert count == 3
    retries = [entry for entry in logs if entry["event"] == "sell request retried"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["status"] == status and r["method"] == "GET" and r["path"] == "/v2/users/self"
               for r in retries)  # fmt: skip
    assert all(r["delay"] > 0 for r in retries)
    assert TOKEN not in repr(logs) and "hidden-value" not in repr(logs)


async def test_retries_are_bounded_and_raise_typed_errors():
    def handler(request):
        if request.url.path.endswith("/busy"):
            return httpx.Response(429)  # no headers, no body
        return httpx.Response(503, text="Service Unavailable", headers={"X-Request-Id": "r-503"})

    async with make(handler, max_attempts=3) as sell:
        with pytest.raises(E.RateLimitedError) as rl:
            await sell.get("/v2/busy")
        with pytest.raises(E.ServerError) as se:
            await sell.get("/v2/down")
    assert rl.value.status == 429 and rl.value.attempts == 3
    assert se.value.status == 503 and se.value.logref == "r-503"
    assert "Service Unavailable" in str(se.value)
    assert sell.requests_sent == 6


async def test_retry_after_is_honoured_and_defers_the_shared_budget(autojump_clock):
    count = 0

    def handler(request):
        nonlocal count
        count += 1
        if count == 1:
            return httpx.Response(429, headers={"Retry-After": "4"})
        return httpx.Response(200, json={"data": {"id": 1}})

    budget = RateBudget(1000.0)
    async with make(handler, budget=budget) as sell:
        t0 = trio.current_time()
        await sell.users_self()
        assert trio.current_time() - t0 >= 4.0
    assert count == 2


@pytest.mark.parametrize(("status", "cls"), [(401, E.AuthenticationError), (403, E.ForbiddenError),
                                             (404, E.NotFoundError), (400, E.BadRequestError)])  # fmt: skip
async def test_client_errors_are_not_retried(status, cls):
    count = 0

    def handler(request):
        nonlocal count
        count += 1
        return httpx.Response(status, json={"errors": [{"error": {"code": "c", "message": "m"}}],
                                            "meta": {"logref": "lr"}})  # fmt: skip

    async with make(handler) as sell:
        with pytest.raises(cls) as info:
            await sell.get_lead(7)
    assert count == 1
    assert info.value.status == status and info.value.logref == "lr"
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


async def test_validation_error_carries_code_field_details():
    body = {"errors": [{"error": {"code": "incorrect_value", "message": "attribute value is incorrect",
                                  "details": "'weeklyy' is not a choice", "resource": "lead",
                                  "field": "/data/custom_fields/Subscription"}}],
            "meta": {"type": "errors", "logref": "x-1"}}  # fmt: skip

    async with make(lambda r: httpx.Response(422, json=body)) as sell:
        with pytest.raises(E.ValidationError) as info:
            await sell.update_lead(3, {"custom_fields": {"Subscription": "weeklyy"}})
    err = info.value
    assert (err.code, err.field, err.details) == (
        "incorrect_value",
        "/custom_fields/Subscription",
        "'weeklyy' is not a choice",
    )
    assert err.errors[0]["resource"] == "lead"


async def test_create_is_not_retried_after_an_ambiguous_failure_but_is_after_429_503():
    statuses = [500]

    def handler(request):
        return (
            httpx.Response(statuses.pop(0))
            if statuses
            else httpx.Response(200, json={"data": {"id": 9, "last_name": "X"}})
        )

    async with make(handler) as sell:
        with pytest.raises(E.ServerError) as info:
            await sell.create_lead({"last_name": "X"})
        assert info.value.maybe_applied is True and info.value.attempts == 1
        statuses.extend([429, 503])
        lead = await sell.create_lead({"last_name": "X"})
    assert lead.id == 9


async def test_connect_errors_retry_then_network_error():
    count = 0

    def handler(request):
        nonlocal count
        count += 1
        raise httpx.ConnectError(f"refused Bearer {TOKEN}", request=request)

    async with make(handler, max_attempts=4) as sell:
        with pytest.raises(E.NetworkError) as info:
            await sell.create_lead({"last_name": "X"})
    assert count == 4
    assert info.value.maybe_applied is False
    assert TOKEN not in str(info.value)


async def test_timeouts_are_explicit_and_retried_for_reads(autojump_clock):
    count = 0

    async def handler(request):
        nonlocal count
        count += 1
        if count < 3:
            await trio.sleep(100)
        return httpx.Response(200, json={"data": {"id": 1}})

    async with make(handler, timeout=2.0) as sell:
        t0 = trio.current_time()
        assert (await sell.users_self())["id"] == 1
        assert 4.0 <= trio.current_time() - t0 < 10
        count = 0
        with pytest.raises(E.NetworkError) as info:
            await sell.create_lead({"last_name": "X"})
    assert info.value.maybe_applied is True
    assert count == 1


async def test_malformed_success_bodies():
    bodies = iter([
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"meta": {}}),
        httpx.Response(200, json={"items": "nope"}),
    ])  # fmt: skip

    async with make(lambda r: next(bodies)) as sell:
        for call in (sell.users_self, sell.users_self, sell.users_self):
            with pytest.raises(E.MalformedResponseError):
                await call()
        with pytest.raises(E.MalformedResponseError):
            await sell.custom_fields("lead")


async def test_delete_and_missing_ok():
    answers = iter([httpx.Response(204), httpx.Response(404), httpx.Response(404)])
    async with make(lambda r: next(answers)) as sell:
        assert await sell.delete_lead(1) is True
        assert await sell.delete_contact(2, missing_ok=True) is False
        with pytest.raises(E.NotFoundError):
            await sell.delete_lead(3)


async def test_sync_calls_send_device_header_and_wrap_ack():
    seen = []

    def handler(request):
        seen.append(request)
        if request.url.path == "/v2/sync/start":
            return httpx.Response(
                201,
                json={
                    "data": {
                        "id": "sess-1",
                        "queues": [
                            {"data": {"name": "main", "pages": 1}, "meta": {"type": "sync_queue"}}
                        ],
                    }
                },
            )
        if request.url.path == "/v2/sync/sess-1/queues/main":
            return httpx.Response(
                200,
                json={
                    "items": [
                        {
                            "data": {"id": 4},
                            "meta": {
                                "type": "lead",
                                "sync": {
                                    "event_type": "deleted",
                                    "ack_key": "Lead-4-2",
                                    "revision": 2,
                                },
                            },
                        }
                    ]
                },
            )
        return httpx.Response(202)

    async with make(handler) as sell:
        session = await sell.sync_start("dev-1")
        items = await sell.sync_fetch(session.id, "dev-1")
        assert await sell.sync_ack([], "dev-1") == 0
        assert await sell.sync_ack(["Lead-4-2"], "dev-1") == 1
    assert session.id == "sess-1" and session.queues == ("main",)
    assert (
        items[0].type == "lead"
        and items[0].event_type == "deleted"
        and items[0].ack_key == "Lead-4-2"
    )
    assert all(r.headers["x-basecrm-device-uuid"] == "dev-1" for r in seen)
    assert len(seen) == 3
    assert json.loads(seen[2].content) == {"data": {"ack_keys": ["Lead-4-2"]}}


async def test_repr_and_closed_client_never_show_the_token():
    sell = make(lambda r: httpx.Response(200))
    assert TOKEN not in repr(sell)
    with pytest.raises(RuntimeError):
        await sell.users_self()


async def test_malformed_records_and_sync_bodies_raise_typed_errors():
    answers = iter([
        httpx.Response(200, json={"items": [{"meta": {}}]}),                        # no data
        httpx.Response(200, json={"items": [{"data": {"last_name": "no id"}}]}),    # no id
        httpx.Response(200, json={"data": {"id": 1, "custom_fields": ["x"]}}),      # wrong type
        httpx.Response(200, json={"data": {"id": 1, "tags": "vip"}}),               # wrong type
        httpx.Response(200, json={"data": {"last_name": "created, no id"}}),        # create
        httpx.Response(201, text=""),                                               # sync start
        httpx.Response(201, json={"data": {"id": "s", "queues": 5}}),
        httpx.Response(200, text=""),                                               # sync fetch
    ])  # fmt: skip

    async with make(lambda r: next(answers)) as sell:
        for call in (
            lambda: anext(aiter(sell.list_leads())),
            lambda: sell.lead_conversions(lead_id=1),
            lambda: sell.get_lead(1),
            lambda: sell.get_contact(1),
        ):
            with pytest.raises(E.MalformedResponseError):
                await call()
        with pytest.raises(E.MalformedResponseError) as created:
            await sell.create_lead({"last_name": "X"})
        assert created.value.maybe_applied is True  # the 2xx means it exists: look it up
        for call in (
            lambda: sell.sync_start("d"),
            lambda: sell.sync_start("d"),
            lambda: sell.sync_fetch("s", "d"),
        ):
            with pytest.raises(E.MalformedResponseError):
                await call()


@pytest.mark.parametrize("response", [
    httpx.Response(400, json={"errors": [{"error": {"code": TOKEN, "message": f"Bearer {TOKEN}",
                                                    "details": TOKEN, "resource": TOKEN,
                                                    "field": f"/{TOKEN}"}}],
                              "meta": {"logref": TOKEN}}),
    httpx.Response(502, text=f"<html><body>upstream said Bearer {TOKEN}</body></html>"),
    httpx.Response(200, text=f"<html>Authorization: Bearer {TOKEN}</html>"),
    httpx.Response(200, json={"data": {"id": 1, "tags": TOKEN}}),
])  # fmt: skip
async def test_the_token_never_reaches_an_error_or_a_log_line(response):
    with capture_logs() as logs:
        async with make(lambda r: response, max_attempts=2) as sell:
            with pytest.raises(E.SellError) as info:
                await sell.get_lead(1)
    err = info.value
    texts = [str(err), repr(err), repr(err.errors), str(err.logref), repr(logs), repr(sell)]
    assert all(TOKEN not in t for t in texts)


async def test_paging_stops_when_next_page_points_back_at_the_same_page():
    calls = 0

    def handler(request):
        nonlocal calls
        calls += 1
        return httpx.Response(
            200, json=collection([lead_json(1)], "https://sell.test/v2/leads?page=1&per_page=100")
        )

    async with make(handler) as sell:
        ids = [lead.id async for lead in sell.list_leads()]
    assert ids == [1] and calls == 1


async def test_an_in_process_answer_past_the_cap_is_refused_like_a_5xx():
    """A transport that hands its answer over already read (httpx.MockTransport) is held to
    ``max_response_bytes`` too. Planted bug: the cap skipped for such answers."""
    calls = []

    def handler(request: httpx.Request):
        calls.append(request.method)
        return httpx.Response(200, json={"data": {"id": 1, "pad": "x" * 2000}})

    exact = len(httpx.Response(200, json={"data": {"id": 1, "pad": "x" * 2000}}).content)
    async with make(handler, max_response_bytes=exact, max_attempts=1) as sell:
        assert (await sell.get("/v2/leads/1"))["id"] == 1  # the cap itself is allowed
    calls.clear()
    async with make(handler, max_response_bytes=2000, max_attempts=2) as sell:
        with pytest.raises(
            E.NetworkError,
            match="^no usable answer from Sell: RemoteProtocolError: Sell's answer was "
            "refused: a body larger than 2000 bytes once decoded",
        ) as got:
            await sell.request("GET", "/v2/leads/1")
        with pytest.raises(E.NetworkError) as created:
            await sell.create_lead({"last_name": "X"})
    assert got.value.attempts == 2 and created.value.maybe_applied
    assert calls == ["GET", "GET", "POST"]
