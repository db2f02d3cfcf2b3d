"""Security, second round, at the links service: what an outsider can make it do.

The Host header never shapes an answer; HSTS behind an https ``public_url``; the
per-token change limit; signup emails carry nothing the requester typed; a
confirmation link works once.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from kuloo_daemon.links import limits
from kuloo_daemon.links.pages import SECURITY_HEADERS
from kuloo_daemon.store import users as user_store
from kuloo_daemon.tokens import Claim, Purpose
from kuloo_daemon.vocabulary import Actor

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
HSTS = "max-age=31536000"


# ----------------------------------------------------------------------------- Host header


@pytest.mark.parametrize(
    "path", ["/healthz/", "/u/abc/", "/signup/1/", "/r/x/", "//evil.example/x"]
)
async def test_no_answer_is_built_from_the_host_header(links_env, path):
    async with links_env() as links:
        r = await links.http.get(path, headers={"host": "evil.example"})
        assert r.status_code in (400, 404, 405), r.status_code
        assert "location" not in r.headers
        assert "evil.example" not in r.text
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items())


# ----------------------------------------------------------------------------- HSTS


async def test_every_answer_carries_hsts_when_public_url_is_https(links_env):
    extra = {"public_url": "https://links.gardens.test", "rate_per_minute": 1, "rate_burst": 4}
    async with links_env(links=extra) as links:
        user = await links.user(await links.channel())
        answers = [
            await links.http.get("/healthz"),
            await links.http.get("/nope"),
            await links.http.post(f"/u/{links.token(user)}", data=ONE_CLICK),
            await links.http.get(f"/u/{links.token(user)[:-3]}xyz"),
            await links.http.get("/healthz"),  # past the burst: 429
        ]
        assert [r.status_code for r in answers] == [200, 404, 200, 400, 429]
        for r in answers:
            assert r.headers.get("strict-transport-security") == HSTS, r.status_code
        async with httpx.AsyncClient(base_url=links.url) as fresh:  # 431 from the edge
            r = await fresh.get("/healthz", headers={"x-big": "y" * 9000})
        assert r.status_code == 431 and r.headers.get("strict-transport-security") == HSTS
        # hypercorn's own answer to a request it cannot parse carries it too.
        host, port = links.url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        got = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                got += chunk
        await stream.aclose()
        head = got.split(b"\r\n\r\n")[0].lower()
        assert (
            head.startswith(b"http/1.1 400")
            and b"strict-transport-security: max-age=31536000" in head
        )


async def test_no_hsts_when_public_url_is_plain_http_or_empty(links_env):
    for public_url in ("", "http://127.0.0.1:1"):
        async with links_env(links={"public_url": public_url}) as links:
            r = await links.http.get("/healthz")
            assert r.status_code == 200 and "strict-transport-security" not in r.headers


# ----------------------------------------------------------------------------- per-token limit


async def test_one_link_changes_state_at_most_token_changes_per_hour(links_env):
    async with links_env(
        links={"token_changes_per_hour": 10, "rate_per_minute": 1, "rate_burst": 1}
    ) as links:
        channel = await links.channel()
        user = await links.user(channel, frequency="weekly")
        other = await links.user(channel, "bo@example.com")
        url = f"/u/{links.token(user)}"
        for i in range(10):  # ten changes pass, though the per-address limit is long spent
            r = await links.http.post(url, data={"frequency": ("daily", "weekly")[i % 2]})
            assert r.status_code == 200, i
        before = await links.get(user.id)
        audit = len(await links.audit(user.id))
        r = await links.http.post(url, data={"frequency": "monthly"})  # the eleventh change
        assert r.status_code == 429 and r.headers["retry-after"]
        assert "Nothing was changed" in r.text
        r = await links.http.post(url, data=ONE_CLICK)
        assert r.status_code == 429
        assert (await links.get(user.id)) == before and len(await links.audit(user.id)) == audit
        # A POST that changes nothing is no change: a retry never sees 429.
        r = await links.http.post(url, data={"frequency": before.frequency.value})
        assert r.status_code == 200 and (await links.get(user.id)) == before
        # Another user's link has its own count; a GET never counts.
        assert (
            await links.http.post(f"/u/{links.token(other)}", data=ONE_CLICK)
        ).status_code == 200
        assert (await links.get(other.id)).unsubscribed is True


def test_change_limiter_counts_an_hour_back_and_gives_back_unused_slots():
    limiter = limits.ChangeLimiter(per_hour=2)
    assert [limiter.take("a", t) for t in (0.0, 10.0, 20.0)] == [True, True, False]
    assert limiter.take("b", 20.0) is True  # per key
    limiter.give_back("a", 10.0)  # that POST changed nothing
    assert limiter.take("a", 30.0) is True and limiter.take("a", 31.0) is False
    assert limiter.take("a", 3600.5) is True  # the first change is an hour old
    assert limiter.take("a", 3600.6) is False


async def test_one_click_retries_after_the_limit_answer_200(links_env):
    async with links_env(links={"token_changes_per_hour": 2}) as links:
        user = await links.user(await links.channel())
        url = f"/u/{links.token(user)}"
        assert (await links.http.post(url, data={"action": "unsubscribe"})).status_code == 200
        assert (await links.http.post(url, data={"action": "resubscribe"})).status_code == 200
        assert (await links.http.post(url, data={"action": "unsubscribe"})).status_code == 429
        assert (await links.get(user.id)).unsubscribed is False
        assert (await links.http.post(url, data={"action": "resubscribe"})).status_code == 200
        assert (await links.http.post(url, data={"frequency": "weekly"})).status_code == 200


# ----------------------------------------------------------------------------- signup mail


async def test_confirmation_email_carries_no_text_the_requester_typed(links_env):
    lure = "Your account is locked - verify at https://evil.example/login now"
    async with links_env() as links:
        channel = await links.channel()
        r = await links.http.post(
            f"/signup/{channel}",
            data={"email": "victim@example.com", "first_name": lure, "last_name": "Security Team"},
        )
        assert r.status_code == 202
        await links.wait_for_mail(1)
        (msg,) = links.mails()
        assert msg["To"] == "victim@example.com"
        text = "".join(
            [
                msg.as_string(),
                msg.get_body(("plain",)).get_content(),
                msg.get_body(("html",)).get_content(),
            ]
        )
        for typed in ("evil.example", "locked", "Security Team"):
            assert typed not in text
        # The names stay in the signed claim and are saved when the owner confirms.
        (url,) = links.confirm_links()
        assert (await links.http.post(url[len(links.url) :])).status_code == 200
        page = await links.services.store.run(
            user_store.list_page, channel, user_store.Filters(), None, 10
        )
        (user,) = page.users
        assert (user.first_name, user.last_name) == (lure, "Security Team")


async def test_the_signup_cooldown_ignores_a_plus_tag(links_env):
    async with links_env(links={"confirm_resend_minutes": 10}) as links:
        channel = await links.channel()
        for address in (
            "victim+1@example.com",
            "victim+2@example.com",
            "Victim@example.com",
            "victim+x+y@example.com",
            "other@example.com",
        ):
            assert (
                await links.http.post(f"/signup/{channel}", data={"email": address})
            ).status_code == 202
        await links.wait_for_mail(2)
        assert sorted(m["To"] for m in links.mails()) == [
            "other@example.com",
            "victim+1@example.com",
        ]


async def test_one_client_address_causes_at_most_signup_per_hour_emails(links_env):
    extra = {"signup_per_hour": 3, "trusted_proxies": ["127.0.0.1/32"]}
    async with links_env(links=extra) as links:
        channel = await links.channel()
        answers = set()
        for i in range(6):
            r = await links.http.post(
                f"/signup/{channel}",
                data={"email": f"n{i}@example.com"},
                headers={"x-forwarded-for": "203.0.113.5"},
            )
            answers.add((r.status_code, r.text))
        assert len(answers) == 1  # the same answer: nothing tells the sender it was capped
        await links.wait_for_mail(3)
        r = await links.http.post(
            f"/signup/{channel}",
            data={"email": "mine@example.com"},
            headers={"x-forwarded-for": "198.51.100.8"},
        )  # another client
        assert r.status_code == 202
        await links.wait_for_mail(4)
        assert sorted(m["To"] for m in links.mails()) == [
            "mine@example.com",
            "n0@example.com",
            "n1@example.com",
            "n2@example.com",
        ]


# ----------------------------------------------------------------------------- confirmation replay


async def test_a_confirmation_link_does_not_undo_a_later_unsubscribe(links_env):
    async with links_env() as links:
        channel = await links.channel()
        await links.http.post(
            f"/signup/{channel}", data={"email": "reader@example.com", "first_name": "Ria"}
        )
        await links.wait_for_mail(1)
        path = links.confirm_links()[0][len(links.url) :]
        assert (await links.http.post(path)).status_code == 200
        user = await links.services.store.run(
            user_store.get_by_email, channel, "reader@example.com"
        )
        await links.services.clock.advance(60)
        r = await links.http.post(f"/u/{links.token(user)}", data=ONE_CLICK)
        assert r.status_code == 200
        unsubscribed = await links.get(user.id)
        assert unsubscribed.unsubscribed is True
        await links.services.clock.advance(60)
        r = await links.http.post(path)  # the old confirmation link, replayed
        assert r.status_code == 200 and "already confirmed" in r.text.lower()
        assert (await links.get(user.id)) == unsubscribed
        # A fresh signup (issued after the unsubscribe) still subscribes them again.
        await links.http.post(f"/signup/{channel}", data={"email": "reader@example.com"})
        await links.wait_for_mail(2)
        fresh = [u for u in links.confirm_links() if u[len(links.url) :] != path]
        assert (await links.http.post(fresh[0][len(links.url) :])).status_code == 200
        assert (await links.get(user.id)).unsubscribed is False


async def test_unrelated_changes_after_issue_do_not_block_a_resubscribe(links_env):
    async with links_env() as links:
        channel = await links.channel()
        user = await links.user(channel, "back@example.com")
        await links.http.post(f"/u/{links.token(user)}", data=ONE_CLICK)
        await links.services.clock.advance(60)
        await links.http.post(f"/signup/{channel}", data={"email": "back@example.com"})
        await links.wait_for_mail(1)
        await links.services.clock.advance(60)
        await links.services.store.run(
            user_store.update,
            user.id,
            {"first_name": "Bea"},
            Actor.SYNC,
            links.services.clock.now(),
        )  # a sync write, later
        assert (
            await links.http.post(links.confirm_links()[0][len(links.url) :])
        ).status_code == 200
        after = await links.get(user.id)
        assert after.unsubscribed is False and after.first_name == "Bea"


async def test_an_older_confirmation_token_counts_as_issued_confirm_hours_before_it_expires(
    links_env,
):
    async with links_env(links={"confirm_hours": 2}) as links:
        channel = await links.channel()
        user = await links.user(channel, "old@example.com")
        now = int(links.services.clock.now().timestamp())
        # The format before ``issued``: [email, first, last]; issued = expires - confirm_hours.
        old = links.signer.sign(
            Claim(
                Purpose.CONFIRM,
                channel,
                "",
                json.dumps(["old@example.com", "", ""]),
                now + 7200 - 600,
            )
        )  # issued ten minutes ago
        await links.http.post(f"/u/{links.token(user)}", data=ONE_CLICK)  # unsubscribed since
        r = await links.http.post(f"/c/{old}")
        assert r.status_code == 200 and "already confirmed" in r.text.lower()
        assert (await links.get(user.id)).unsubscribed is True
        older = links.signer.sign(
            Claim(
                Purpose.CONFIRM,
                channel,
                "",
                json.dumps(["old@example.com", "", ""]),
                now + 7200 + 600,
            )
        )  # "issued" after the unsubscribe
        assert (await links.http.post(f"/c/{older}")).status_code == 200
        assert (await links.get(user.id)).unsubscribed is False
