"""Metrics in-process: the health check's verdicts, the database gauges' cache, the
scheduler's start lag, one registry per Services, the HTTP answers (docs/operations.md,
"Metrics"). Real store files; the scrape end to end is tests/sync/test_metrics_e2e.py."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import prometheus_client
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from kuloo_daemon.clock import ManualClock
from kuloo_daemon.instruments import Metrics, links_route
from kuloo_daemon.operations import metrics as ops
from kuloo_daemon.scheduler import ClockJob, Job, start_lag
from kuloo_daemon.services import open_services
from kuloo_daemon.store import stats

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def asgi(app, method: str, path: str, headers=()) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    await app(scope, receive, send)
    start, body = sent
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


async def test_healthz_is_200_only_while_the_scheduler_ticks_and_the_store_answers(
    services_config, monkeypatch
):
    async with open_services(services_config()) as services:
        exporter = ops.Exporter(services)
        status, _h, body = await asgi(exporter, "GET", "/healthz")
        doc = json.loads(body)
        assert status == 503 and doc["scheduler"]["ok"] is False  # never ticked yet
        assert doc["store"]["reachable"] is True
        async with trio.open_nursery() as nursery:
            await nursery.start(services.scheduler.run)
            await trio.sleep(0.1)
            status, _h, body = await asgi(exporter, "GET", "/healthz")
            assert status == 200, body
            doc = json.loads(body)
            assert doc["healthy"] is True and doc["leases"] == {
                "daemon": services.leases.id,
                "shared": False,
                "held": [],
            }

            async def hangs() -> None:  # a store that does not answer
                await asyncio.sleep(30)

            monkeypatch.setattr(stats, "ping", hangs)
            monkeypatch.setattr(ops, "PING_SECONDS", 0.3)
            status, _h, body = await asgi(exporter, "GET", "/healthz")
            doc = json.loads(body)
            assert status == 503 and doc["store"]["reachable"] is False
            assert doc["store"]["problem"] == "no answer within 0.3 s"
            monkeypatch.undo()
            assert (await asgi(exporter, "GET", "/healthz"))[0] == 200
            services.stopping = True  # a load balancer stops sending work during the drain
            assert (await asgi(exporter, "GET", "/healthz"))[0] == 503
            services.stopping = False
            services.scheduler.stop()
        await trio.sleep(3 * services.scheduler.tick_seconds + 1.1)  # no tick since
        status, _h, body = await asgi(exporter, "GET", "/healthz")
        assert status == 503 and json.loads(body)["scheduler"]["ok"] is False


async def test_database_gauges_are_read_at_most_once_per_cache_period(services_config, monkeypatch):
    monkeypatch.setattr(ops, "CACHE_SECONDS", 0.5)
    async with open_services(services_config()) as services:
        exporter = ops.Exporter(services)
        for _ in range(5):
            status, _h, body = await asgi(exporter, "GET", "/metrics")
            assert status == 200
        assert exporter.queries == 1
        await trio.sleep(0.6)
        await asgi(exporter, "GET", "/metrics")
        assert exporter.queries == 2
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        outbox = families["kuloo_sync_outbox_messages"]
        assert {s.labels["state"] for s in outbox.samples} == {
            "queued",
            "sending",
            "sent",
            "failed",
            "uncertain",
            "cancelled",
        }


async def test_a_store_failure_leaves_the_scrape_answering_with_store_up_0(
    services_config, monkeypatch
):
    async with open_services(services_config()) as services:
        exporter = ops.Exporter(services)

        async def fails(_per_channel: bool):
            raise OSError("disk gone")

        monkeypatch.setattr(stats, "outbox_states", fails)
        status, _h, body = await asgi(exporter, "GET", "/metrics")
        assert status == 200
        samples = {
            s.name: s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
        }
        assert samples["kuloo_sync_store_up"] == 0


async def test_http_answers_head_openmetrics_and_refusals(services_config):
    async with open_services(services_config()) as services:
        exporter = ops.Exporter(services)
        status, headers, body = await asgi(exporter, "HEAD", "/metrics")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        status, headers, body = await asgi(
            exporter, "GET", "/metrics", [("accept", "application/openmetrics-text")]
        )
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert (await asgi(exporter, "POST", "/healthz"))[0] == 405
        assert (await asgi(exporter, "GET", "/"))[0] == 404


def test_each_metrics_object_has_its_own_registry_and_none_is_global():
    a, b = Metrics(), Metrics()
    a.sync_runs.labels("ok").inc()
    assert b.registry.get_sample_value("kuloo_sync_runs_total", {"status": "ok"}) == 0
    assert a.registry.get_sample_value("kuloo_sync_runs_total", {"status": "ok"}) == 1
    assert (
        prometheus_client.REGISTRY.get_sample_value("kuloo_sync_runs_total", {"status": "ok"})
        is None
    )


def test_links_routes_are_templates_never_the_token():
    assert links_route("/u/eyJ0b2tlbiI6MX0.sig") == "/u/{token}"
    assert links_route("/r/abc") == "/r/{token}"
    assert links_route("/c/abc") == "/c/{token}"
    assert links_route("/signup/12") == "/signup/{channel}"
    assert links_route("/signup/ann@example.com") == "other"
    assert links_route("/u/abc/extra") == "other"
    assert links_route("/healthz") == "/healthz"
    assert links_route("/wp-admin/ann@example.com") == "other"


def test_start_lag_is_how_late_a_job_started_not_how_far_the_clock_jumped():
    job = Job("tidy", lambda now: 100.0, lambda: None)  # type: ignore[arg-type, return-value]
    assert start_lag(job, 130.0, START, 99.0, {}) == 30.0  # wedged: due at 100, started at 130
    # The tick before, at 100.3, saw it not yet due.
    assert start_lag(job, 100.5, START, 100.3, {}) == pytest.approx(0.2)
    assert start_lag(job, 130.0, START, 99.0, {"tidy": 125.0}) == 5.0  # backing off until 125
    business = ClockJob("sync", lambda now: START, lambda: None)  # type: ignore[arg-type]
    # A manual clock moved a day: business time says a day late, the scheduler was not.
    assert start_lag(business, 50.2, START + timedelta(days=1), 50.0, {}) == pytest.approx(0.2)
    assert start_lag(business, 50.2, START + timedelta(seconds=0.1), 50.0, {}) == 0.1
    assert (
        start_lag(
            ClockJob("x", lambda now: None, lambda: None),  # type: ignore[arg-type]
            50.2,
            START,
            50.0,
            {},
        )
        == 0.0
    )


async def test_the_scheduler_reports_each_start_with_its_lag():
    business = ManualClock(START)
    from kuloo_daemon.scheduler import Scheduler

    scheduler = Scheduler(0.05, business)
    seen: list[tuple[str, float]] = []
    scheduler.on_start = lambda job, lag: seen.append((job, lag))
    ran = trio.Event()

    async def run() -> None:
        ran.set()

    scheduler.jobs.append(ClockJob("later", lambda now: START + timedelta(hours=1), run))
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(0.2)
        assert seen == []
        await business.advance(86400)
        with trio.fail_after(5):
            await ran.wait()
        scheduler.stop()
    assert seen[0][0] == "later" and 0 <= seen[0][1] < 1.0  # not the 23 h the clock jumped


DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"


async def test_the_sample_dashboard_queries_only_metrics_that_exist(services_config):
    text = DASHBOARD.read_text()  # noqa: ASYNC240 - a small file, once
    queried = set(re.findall(r"kuloo_sync_\w+", text))
    async with open_services(services_config()) as services:
        _status, _h, body = await asgi(ops.Exporter(services), "GET", "/metrics")
    exposed = {
        f.name + suffix
        for f in text_string_to_metric_families(body.decode())
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }  # declared families
    assert queried and queried <= exposed, queried - exposed


# ----------------------------------------------------------------------------- the daemon


def test_metrics_are_off_by_default_and_a_taken_port_is_one_clear_error(daemon_factory):
    import socket

    d = daemon_factory(sub="off").start()
    d.wait_for("READY=1")
    ready = next(json.loads(line) for line in d.log().splitlines() if '"daemon ready"' in line)
    assert ready["metrics"] is None
    assert d.stop() == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = daemon_factory(f'[metrics]\nlisten = "127.0.0.1:{port}"\n', sub="busy").start()
        assert d.proc is not None and d.proc.wait(30) == 1
        assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in d.log()
        assert "Traceback" not in d.log()


def test_a_bad_listen_address_is_a_config_problem():
    from kuloo_daemon import config as config_mod

    with pytest.raises(config_mod.ConfigError) as bad:
        config_mod.from_mapping({"metrics": {"listen": "localhost"}})
    assert any(p.startswith("metrics.listen:") for p in bad.value.problems)
    with pytest.raises(config_mod.ConfigError):
        config_mod.from_mapping({"metrics": {"per_channel": "yes"}})
    assert config_mod.from_mapping({"metrics": {"listen": "[::1]:9464"}})["metrics.listen"]


async def test_leases_held_on_postgresql_are_in_the_metrics_and_healthz(
    services_config, pg_server, pg_database
):
    from kuloo_daemon.store import channels as channel_store

    config = services_config(clock={"mode": "manual"}, store={"url": pg_server.url(pg_database)})
    async with open_services(config) as services:
        exporter = ops.Exporter(services)
        created = await services.store.run(
            channel_store.create, {"name": "A"}, None, services.clock.now()
        )
        cid = created.channel.id
        async with services.leases.hold("delivery", cid) as held:
            assert held
            _s, _h, body = await asgi(exporter, "GET", "/metrics")
            samples = {
                (s.name, tuple(s.labels.values())): s.value
                for f in text_string_to_metric_families(body.decode())
                for s in f.samples
            }
            assert samples[("kuloo_sync_leases_held", ("delivery",))] == 1
            assert samples[("kuloo_sync_leases_held", ("sync",))] == 0
            _ok, doc = await exporter.health()
            assert doc["leases"]["shared"] is True
            assert doc["leases"]["held"] == [{"channel": cid, "kind": "delivery"}]
            assert doc["store"]["reachable"] is True  # the ping works on PostgreSQL too
        _s, _h, body = await asgi(exporter, "GET", "/metrics")
        assert 'kuloo_sync_leases_held{kind="delivery"} 0.0' in body.decode()


async def test_events_a_slow_control_subscriber_lost_are_counted(services_config):
    from kuloo_daemon.control.server import Broadcaster

    broadcaster = Broadcaster(buffer=2)
    subscription = broadcaster.subscribe()
    for n in range(3):  # the third does not fit: the subscription ends
        broadcaster.publish("users.changed", {"n": n})
    assert subscription.overflowed
    broadcaster.publish("users.changed", {"n": 3})  # nobody subscribed: nothing lost
    async with open_services(services_config()) as services:
        exporter = ops.Exporter(services, events_dropped=lambda: broadcaster.dropped)
        _s, _h, body = await asgi(exporter, "GET", "/metrics")
    text = body.decode()
    assert 'kuloo_sync_events_dropped_total{source="control"} 1.0' in text
    assert 'kuloo_sync_events_dropped_total{source="relay"} 0.0' in text


def test_the_listener_stops_with_the_daemon(daemon_factory):
    import signal
    import time

    import httpx

    d = daemon_factory('[metrics]\nlisten = "127.0.0.1:0"\n').start()
    d.wait_for("READY=1")
    ready = next(json.loads(line) for line in d.log().splitlines() if '"daemon ready"' in line)
    url = ready["metrics"]
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    with httpx.Client(timeout=10) as kept_alive:  # a scraper's idle keep-alive connection
        assert kept_alive.get(f"{url}/metrics").status_code == 200
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.proc is not None and d.proc.wait(15) == 0
        assert time.monotonic() - started < 3  # not held up to the grace deadline
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
