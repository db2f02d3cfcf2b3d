"""Rate limits per token and every fault kind, driven deterministically."""

from __future__ import annotations

import calendar
import time

import httpx
import pytest
from sellsim_checks import assert_error

from sellsim.seeds import default_seed

OTHER = "other-token-".ljust(64, "1")


def test_default_limit_is_10_per_second_without_headers(sellsim):
    assert sellsim.options()["rate_per_second"] == 10
    assert sellsim.options()["rate_per_hour"] == 36_000
    with sellsim.client() as api:
        statuses = [api.get("/v2/users/self") for _ in range(14)]
        assert [r.status_code for r in statuses[:10]] == [200] * 10
        limited = statuses[10:]
        assert all(r.status_code == 429 for r in limited)
        for r in limited:
            assert r.headers["x-request-id"]
            assert not any(h.startswith("x-ratelimit") or h == "retry-after" for h in r.headers)
        time.sleep(1.05)  # the sliding window empties
        assert api.get("/v2/users/self").status_code == 200
    counters = sellsim.counters()
    stats = counters["tokens"][sellsim.token_name]
    assert stats["rate_limited"] == 4 and counters["served_429"] == 4
    assert stats["peak_rps_sliding"] >= 14 and stats["peak_rps"] >= 7


def test_limit_is_per_token(sellsim):
    seed = default_seed()
    seed["accounts"][0]["tokens"].append({"token": OTHER, "name": "other"})
    sellsim.load_seed(seed)
    sellsim.set_options(rate_per_second=3)
    with sellsim.client() as a, sellsim.client(token=OTHER) as b:
        assert [a.get("/v2/users/self").status_code for _ in range(4)] == [200, 200, 200, 429]
        assert b.get("/v2/users/self").status_code == 200
    assert sellsim.counters()["tokens"]["other"]["rate_limited"] == 0


def test_hour_limit_and_optional_headers_and_json_body(sellsim):
    sellsim.set_options(
        rate_per_second=1000, rate_per_hour=3, rate_limit_headers=True, rate_limit_body="json"
    )
    with sellsim.client() as api:
        for _ in range(3):
            assert api.get("/v2/users/self").status_code == 200
        r = api.get("/v2/users/self")
        assert_error(r, 429, "rate_limit_exceeded")
        assert r.headers["retry-after"] == "1"


def test_peak_rps_counts_wall_clock_seconds(sellsim):
    sellsim.set_options(rate_per_second=1000)
    with sellsim.client() as api:
        for _ in range(5):
            api.get("/v2/users/self")
    # five quick requests: all within one sliding second, and at least three share a
    # wall-clock second (five requests in under a second straddle at most two)
    stats = sellsim.counters()["tokens"][sellsim.token_name]
    assert stats["requests"] == 5
    assert stats["peak_rps_sliding"] == 5
    assert 3 <= sellsim.peak_rps() <= 5
    assert sellsim.counters()["requests"]["GET /v2/users/self"] == 5


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("500", "server_error"),
        ("502", "bad_gateway"),
        ("503", "temporarily_unavailable"),
        ("504", "gateway_timeout"),
    ],
)
def test_5xx_faults_for_the_next_n_requests(api, sim, kind, code):
    sim.set_faults([{"kind": kind, "count": 2}])
    assert_error(api.get("/v2/leads"), int(kind), code)
    assert_error(api.get("/v2/leads"), int(kind), code)
    assert api.get("/v2/leads").status_code == 200
    assert sim.counters()["faults"] == {kind: 2}


def test_429_fault(api, sim):
    sim.set_faults([{"kind": "429", "count": 1}])
    r = api.get("/v2/leads")
    assert r.status_code == 429 and r.headers["x-request-id"]
    assert sim.counters()["served_429"] == 1


def test_html_fault(api, sim):
    sim.set_faults([{"kind": "html", "status": 502, "count": 1}])
    r = api.get("/v2/leads")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert r.text.startswith("<html>")


def test_slow_fault(api, sim):
    sim.set_faults([{"kind": "slow", "delay": 0.3, "count": 1}])
    started = time.perf_counter()
    assert api.get("/v2/users/self").status_code == 200
    assert time.perf_counter() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        sim.set_faults([{"kind": "slow", "delay": 0.5, "count": 1}])
        api.get("/v2/users/self", timeout=0.1)


def test_drop_fault_closes_without_response(api, sim):
    sim.set_faults([{"kind": "drop", "count": 1, "method": "POST"}])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/v2/leads", json={"data": {"last_name": "Lost"}})
    assert sim.records("lead") == []
    assert api.get("/v2/leads").status_code == 200  # a new connection works


def test_drop_after_fault_applies_the_write(api, sim):
    sim.set_faults([{"kind": "drop_after", "count": 1}])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/v2/leads", json={"data": {"last_name": "Applied"}})
    assert [r["last_name"] for r in sim.records("lead")] == ["Applied"]


def test_schedule_path_and_method(api, sim):
    sim.set_faults([{"kind": "503", "path": "/v2/leads*", "method": "GET", "schedule": [2, 4]}])
    got = [api.get("/v2/leads").status_code for _ in range(5)]
    assert got == [200, 503, 200, 503, 200]
    assert api.get("/v2/contacts").status_code == 200
    assert api.post("/v2/leads", json={"data": {"last_name": "A"}}).status_code == 200
    assert sim.faults()[0]["seen"] == 5 and sim.faults()[0]["fired"] == 2
    assert sim.counters()["total"] == 7  # control requests are neither faulted nor counted


def test_probability_is_seeded(api, sim):
    def run():
        sim.set_faults([{"kind": "500", "probability": 0.5}], seed=7)
        return [api.get("/v2/users/self").status_code for _ in range(20)]

    first = run()
    assert 200 in first and 500 in first
    assert run() == first
    sim.set_faults([{"kind": "500", "probability": 0}])
    assert {api.get("/v2/users/self").status_code for _ in range(5)} == {200}


def test_bad_fault_spec_is_rejected(sim):
    with pytest.raises(RuntimeError, match="400"):
        sim.set_faults([{"kind": "teapot"}])
    with pytest.raises(RuntimeError, match="400"):
        sim.set_faults([{"kind": "500", "count": 1, "probability": 0.5}])


def test_every_request_with_a_valid_token_uses_budget(sellsim):
    sellsim.set_options(rate_per_second=3)
    sellsim.set_faults([{"kind": "503"}])
    with sellsim.client() as api:
        got = [api.get("/v2/users/self").status_code for _ in range(3)]
        assert got == [503, 503, 503]
        sellsim.clear_faults()
        assert api.get("/v2/users/self").status_code == 429  # the 503s used the budget
        del api.headers["User-Agent"]
        assert api.get("/v2/users/self").status_code == 429  # before the header checks
    time.sleep(1.05)
    sellsim.set_options(rate_count_all=False)
    sellsim.set_faults([{"kind": "503", "count": 3}])
    with sellsim.client() as api:
        assert [api.get("/v2/users/self").status_code for _ in range(4)] == [503, 503, 503, 200]


def test_hourly_lockout_over_http_until_the_simulated_hour_turns(sellsim):
    """Past ``rate_per_hour`` every request is 429 (no Retry-After by default) until
    ``/_sim/clock`` reaches the next whole hour; with headers, Retry-After says how long.
    Planted bug: the lockout counted on the monotonic clock (the clock move would not free it)."""
    sellsim.set_options(rate_window="hourly_lockout", rate_per_hour=12)
    now = sellsim.advance_clock(0)
    seconds = calendar.timegm(time.strptime(now, "%Y-%m-%dT%H:%M:%SZ"))
    to_hour = 3600 - seconds % 3600
    if to_hour < 30:  # not across an hour boundary of the real clock
        sellsim.advance_clock(to_hour + 1)
        to_hour = 3599
    with sellsim.client() as api:
        statuses = [api.get("/v2/users/self").status_code for _ in range(12)]
        assert statuses == [200] * 12  # no 10/s cap
        refused = [api.get("/v2/users/self") for _ in range(3)]
        assert [r.status_code for r in refused] == [429] * 3
        assert "retry-after" not in refused[0].headers
        sellsim.set_options(rate_limit_headers=True)
        retry_after = int(api.get("/v2/users/self").headers["retry-after"])
        assert to_hour - 30 <= retry_after <= to_hour
        sellsim.advance_clock(retry_after - 5)
        assert api.get("/v2/users/self").status_code == 429
        sellsim.advance_clock(10)
        assert api.get("/v2/users/self").status_code == 200
