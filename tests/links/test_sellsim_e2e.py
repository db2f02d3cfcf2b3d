"""Links end to end with Sell: the daemon (subprocess) against sellsim over loopback.

An email's one-click URL is POSTed → the next sync → the lead shows Subscription =
unsubscribed; a frequency change on the footer page → weekly in Sell; a click → Last
active = that (business) day in Sell.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kuloo_daemon.delivery.message import Envelope, Recipient, links_for
from kuloo_daemon.tokens import Signer
from sellsim.seeds import DEMO_TOKEN

from .conftest import KEY

TAGS = ["welcome", "onboarding", "upsell"]  # the Promo choices of sellsim's default seed


@pytest.fixture
def kuloo_links(daemon_factory, sellsim, short_tmp):
    creds = Path(short_tmp) / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text(KEY + "\n")
    d = daemon_factory(
        extra_config=f'[credentials]\ndirectory = "{creds}"\n'
        '[clock]\nmode = "manual"\nstart = "2026-01-05T09:00:00Z"\n'
        '[links]\nlisten = "127.0.0.1:0"\n',
        sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = 2000\nmax_attempts = 6\n'
        "timeout_seconds = 5\nverify_timeout_seconds = 30\n",
    )
    d.start()
    d.wait_for("READY=1")
    return d


def test_one_click_frequency_and_click_reach_sell_on_the_next_sync(kuloo_links, sellsim):
    d = kuloo_links

    def call(method, params=None):
        with d.client() as c:
            return c.call(method, params or {})

    channel = call(
        "channels.create",
        {"name": "Acme", "plan": "pro", "sequential_tags": TAGS, "api_token": DEMO_TOKEN},
    )
    assert channel["connection"]["status"] == "verified", channel["connection"]
    user = call(
        "users.add",
        {
            "channel": channel["id"],
            "email": "ada@example.com",
            "first_name": "Ada",
            "add_to_crm": True,
            "frequency": "monthly",
        },
    )
    assert call("sync.run", {"channel": channel["id"]})["status"] == "ok"
    (lead,) = sellsim.records("lead")
    assert lead["custom_fields"]["Subscription"] == "monthly"

    url = call("status")["links"]["url"]
    envelope = Envelope(channel["id"], "Acme", "Acme <news@acme.test>", url)
    rendered = type(
        "R", (), {"links": ["https://acme.test/post/1"]}
    )()  # the one link of an article
    email_links = links_for(
        rendered, envelope, Recipient(user["kuloo_id"], user["email"]), Signer([KEY.encode()])
    )

    call("clock.advance", {"seconds": 2 * 86400})  # a later business day: 2026-01-07
    with httpx.Client(timeout=10) as http:
        r = http.get(email_links["link0"])  # a click in the email
        assert r.status_code == 302 and r.headers["location"] == "https://acme.test/post/1"
        r = http.post(
            email_links["unsubscribe"], data={"frequency": "weekly"}
        )  # the footer page's button
        assert r.status_code == 200
    assert call("sync.run", {"channel": channel["id"]})["status"] == "ok"
    (lead,) = sellsim.records("lead")
    assert lead["custom_fields"]["Subscription"] == "weekly"
    assert str(lead["custom_fields"]["Last active"]).startswith("2026-01-07"), lead["custom_fields"]

    with httpx.Client(
        timeout=10
    ) as http:  # what a mailbox provider does with List-Unsubscribe-Post
        r = http.post(email_links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 200
    assert call("sync.run", {"channel": channel["id"]})["status"] == "ok"
    (lead,) = sellsim.records("lead")
    assert lead["custom_fields"]["Subscription"] == "unsubscribed"
    after = call("users.get", {"id": user["id"]})
    assert after["unsubscribed"] is True and after["frequency"] == "weekly"
    actors = {
        e["actor"]
        for e in call("users.audit", {"id": user["id"]})["entries"]
        if e["field"] in ("frequency", "unsubscribed")
    }
    assert actors == {"link"}
