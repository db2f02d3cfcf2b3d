"""Metrics end to end: the daemon as a subprocess with ``[metrics] listen`` on a free port,
sellsim over loopback, a Maildir; scraped over HTTP and parsed with prometheus-client's own
parser (docs/operations.md, "Metrics").

The counters move with a sync (runs, duration, Sell requests, budget waits, a 429 and its
retry) and a send (emails, delivery passes, the outbox by state once its 10 s cache
expires); no label value is ever an email address, a Sell token or a link token.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sellsim.seeds import DEMO_TOKEN, default_seed

from .conftest import FAST, TAGS

ROOT = Path(__file__).resolve().parents[2]
CACHE_SECONDS = 10.0


def metrics_config(root: str, per_channel: bool = False) -> str:
    creds = Path(root) / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text("metrics-e2e-signing-key-0123456789\n")
    shutil.copytree(ROOT / "config" / "articles", Path(root) / "articles" / "sample")
    return (
        f'[clock]\nmode = "manual"\n[sync]\nscheduled = false\n'
        f'[credentials]\ndirectory = "{creds}"\n'
        f'[articles]\nroot = "{root}/articles"\n'
        f'[delivery]\ntransport = "maildir"\nmaildir = "{root}/maildir"\n'
        f'[metrics]\nlisten = "127.0.0.1:0"\nper_channel = {str(per_channel).lower()}\n'
    )


def start(daemon_factory, sellsim, root: str, per_channel: bool = False):
    sellsim.load_seed(default_seed(leads=20, contacts=5))
    sellsim.set_options(rate_per_second=FAST * 2, rate_per_hour=10**9)
    d = daemon_factory(
        metrics_config(root, per_channel),
        sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = {FAST}\n'
        "max_attempts = 4\ntimeout_seconds = 5\n",
    )
    d.start()
    d.wait_for("READY=1")
    urls = {}
    for line in d.log().splitlines():
        if '"daemon ready"' in line:
            doc = json.loads(line)
            urls = {"metrics": doc["metrics"], "links": doc["links"]}
    assert urls.get("metrics", "").startswith("http://127.0.0.1:"), d.log()[-2000:]
    return d, urls


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    """The exposition's text and its samples: (sample name, sorted labels) -> value."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return response.text, samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name: str, **labels) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def create_channel(c) -> int:
    doc = c.call(
        "channels.create",
        {
            "name": "Acme",
            "plan": "pro",
            "sequential_tags": TAGS,
            "api_token": DEMO_TOKEN,
            "sender": "News <news@acme.test>",
            "postal_address": "1 Road",
        },
    )
    assert doc["connection"]["status"] == "verified", doc["connection"]
    return doc["id"]


def test_counters_move_with_a_sync_and_a_send(daemon_factory, sellsim, short_tmp):
    d, urls = start(daemon_factory, sellsim, short_tmp)
    url = urls["metrics"]
    _text, before = scrape(url)
    first_scrape = time.monotonic()
    # Declared from the start, at zero.
    for status in ("ok", "partial", "failed", "skipped"):
        assert ("kuloo_sync_runs_total", (("status", status),)) in before
    for result in ("sent", "failed", "uncertain"):
        assert ("kuloo_sync_emails_total", (("result", result),)) in before
    assert ("kuloo_sync_email_bounces_total", (("kind", "hard"),)) in before
    assert ("kuloo_sync_email_complaints_total", ()) in before
    assert ("kuloo_sync_retention_pruned_rows_total", (("table", "audit"),)) in before
    assert value(before, "kuloo_sync_outbox_messages", state="sent") == 0
    assert value(before, "kuloo_sync_store_up") == 1
    assert value(before, "process_resident_memory_bytes") > 10_000_000  # the daemon's own RSS
    assert ("kuloo_sync_leases_held", (("kind", "sync"),)) in before

    with d.client() as c:
        assert value(scrape(url)[1], "kuloo_sync_control_connections") == 1  # this one
        channel = create_channel(c)
        # One 429 on the change feed's first listing: retried, counted.
        sellsim.set_faults([{"kind": "429", "path": "/v2/*", "method": "GET", "count": 1}])
        run = c.call("sync.run", {"channel": channel})
        assert run["status"] in ("ok", "partial"), run
        assert c.call("articles.import", {"channel": channel, "path": "sample"})["imported"] >= 3
        c.call(
            "users.add",
            {
                "channel": channel,
                "email": "ann@example.com",
                "promo_tags": ["welcome"],
                "frequency": "disabled",
            },
        )
        sent = c.call("delivery.run", {"channel": channel})["sent"]
        assert sent >= 1
        _text, after = scrape(url)

    assert value(after, "kuloo_sync_runs_total", status=run["status"]) == 1
    assert value(after, "kuloo_sync_run_duration_seconds_count") == 1
    assert value(after, "kuloo_sync_run_duration_seconds_sum") > 0
    assert value(after, "kuloo_sync_sell_requests_total", method="GET", status="200") >= 5
    # Every attempt of the run, plus the channel's verification before it.
    assert total(after, "kuloo_sync_sell_requests_total") > run["counts"]["requests"] > 0
    assert value(after, "kuloo_sync_sell_requests_total", method="GET", status="429") == 1
    assert value(after, "kuloo_sync_sell_rate_limited_total") == 1
    assert value(after, "kuloo_sync_sell_retries_total") == 1
    assert value(after, "kuloo_sync_sell_budget_wait_seconds_count") == total(
        after, "kuloo_sync_sell_requests_total"
    )
    assert value(after, "kuloo_sync_emails_total", result="sent") == sent
    assert value(after, "kuloo_sync_delivery_pass_duration_seconds_count") >= 1
    assert total(after, "kuloo_sync_scheduler_lag_seconds_count") >= 1
    assert value(after, "kuloo_sync_control_connections") == 1
    # The outbox is read from the database at most every 10 s: still the first scrape's.
    if time.monotonic() - first_scrape < CACHE_SECONDS - 1:
        assert value(after, "kuloo_sync_outbox_messages", state="sent") == 0
    time.sleep(max(0.0, first_scrape + CACHE_SECONDS + 0.5 - time.monotonic()))
    _text, later = scrape(url)
    assert value(later, "kuloo_sync_outbox_messages", state="sent") == sent
    assert value(later, "kuloo_sync_control_connections") == 0  # the client left

    health = httpx.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200, health.text
    doc = health.json()
    assert doc["healthy"] is True and doc["store"]["reachable"] is True
    assert doc["scheduler"]["ok"] is True and doc["leases"]["shared"] is False
    assert httpx.post(f"{url}/metrics", timeout=10).status_code == 405
    assert httpx.get(f"{url}/other", timeout=10).status_code == 404


SAFE_LABEL = re.compile(r"[A-Za-z0-9_./{}+-]*")


def test_no_label_carries_an_email_or_a_token(daemon_factory, sellsim, short_tmp):
    d, urls = start(daemon_factory, sellsim, short_tmp, per_channel=True)
    with d.client() as c:
        channel = create_channel(c)
        run = c.call("sync.run", {"channel": channel})
        assert run["status"] in ("ok", "partial"), run
        assert len(c.call("users.list", {"channel": channel, "limit": 500})["users"]) >= 10
        c.call("articles.import", {"channel": channel, "path": "sample"})
        c.call(
            "users.add",
            {
                "channel": channel,
                "email": "ann@example.com",
                "promo_tags": ["welcome"],
                "frequency": "disabled",
            },
        )
        assert c.call("delivery.run", {"channel": channel})["sent"] >= 1
    # Follow an unsubscribe link from a sent email: the links request is counted by route.
    path = next((Path(short_tmp) / "maildir" / "new").iterdir())
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    (link,) = re.findall(r"<(https?://[^>]+)>", str(msg["List-Unsubscribe"]))
    link_token = link.rsplit("/", 1)[1]
    page = httpx.get(f"{urls['links']}/u/{link_token}", timeout=10)
    assert page.status_code == 200

    text, samples = scrape(urls["metrics"])
    assert "@" not in text
    assert DEMO_TOKEN not in text and link_token not in text
    assert value(samples, "kuloo_sync_links_requests_total", route="/u/{token}", status="200") == 1
    for (_name, labels), _v in samples.items():
        for key, label in labels:
            assert SAFE_LABEL.fullmatch(label), (key, label)
            if key == "channel":
                assert label == str(channel)
    assert value(samples, "kuloo_sync_runs_total", status=run["status"], channel=str(channel)) == 1
    assert value(samples, "kuloo_sync_emails_total", result="sent", channel=str(channel)) >= 1


def test_on_postgresql_each_daemon_counts_only_its_own_runs(
    daemon_factory, sellsim, pg_server, pg_database, short_tmp
):
    """Daemon B hears daemon A's ``sync.finished`` (LISTEN/NOTIFY) but counts it not: summing
    the daemons' series gives every run once."""
    from kuloo_daemon.control.protocol import Event

    sellsim.load_seed(default_seed(leads=5))
    sellsim.set_options(rate_per_second=FAST * 2, rate_per_hour=10**9)
    daemons, urls = [], []
    for name in ("a", "b"):
        d = daemon_factory(
            sub=name,
            extra_config=(
                f'[store]\nurl = "{pg_server.url(pg_database)}"\nlease_seconds = 5\n'
                '[clock]\nmode = "manual"\n[sync]\nscheduled = false\n'
                '[metrics]\nlisten = "127.0.0.1:0"\n'
            ),
            sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = {FAST}\n',
        )
        daemons.append(d.start())
    for d in daemons:
        d.wait_for("READY=1", timeout=60)
        ready = next(json.loads(line) for line in d.log().splitlines() if '"daemon ready"' in line)
        urls.append(ready["metrics"])
    a, b = daemons
    with a.client() as ca, b.client() as cb:
        channel = create_channel(ca)
        cb.call("subscribe")
        run = ca.call("sync.run", {"channel": channel})
        assert run["status"] in ("ok", "partial"), run
        deadline = time.monotonic() + 20
        while not any(isinstance(e, Event) and e.event == "sync.finished" for e in cb.events):
            assert time.monotonic() < deadline, "B never heard A's run"
            cb.sock.settimeout(1.0)
            try:
                cb.events.append(cb.read_message())
            except TimeoutError:
                continue
    _t, on_a = scrape(urls[0])
    _t, on_b = scrape(urls[1])
    assert value(on_a, "kuloo_sync_runs_total", status=run["status"]) == 1
    assert total(on_b, "kuloo_sync_runs_total") == 0
    assert value(on_b, "kuloo_sync_run_duration_seconds_count") == 0
