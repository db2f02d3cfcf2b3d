"""Every route of the links service over loopback HTTP: what it changes, and that a GET changes nothing."""

from __future__ import annotations

import pytest

from kuloo_daemon.links.pages import SECURITY_HEADERS
from kuloo_daemon.tokens import Claim, Purpose

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def assert_secure(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


async def test_healthz_answers_with_security_headers(links_env):
    async with links_env() as links:
        r = await links.http.get("/healthz")
        assert r.status_code == 200 and r.text == "ok\n"
        assert_secure(r)
        assert "server" not in r.headers


async def test_footer_page_shows_channel_choice_and_every_button_without_script(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel("Kuloo <Gardens>"), frequency="monthly")
        r = await links.http.get(f"/u/{links.token(user)}")
        assert r.status_code == 200
        assert_secure(r)
        page = r.text
        assert "Kuloo &lt;Gardens&gt;" in page and "<Gardens>" not in page  # escaped
        assert "a monthly digest" in page
        for value in ("daily", "weekly", "monthly", "disabled"):
            assert f'name="frequency" value="{value}"' in page
        assert "No digests" in page and 'value="unsubscribe"' in page
        assert "<script" not in page.lower()
        assert 'method="post"' in page and "action=" not in page  # posts back to the same URL


async def test_one_click_post_unsubscribes_at_once_and_is_idempotent(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel())
        url = f"/u/{links.token(user)}"
        r = await links.http.post(url, data=ONE_CLICK)
        assert r.status_code == 200
        assert_secure(r)
        after = await links.get(user.id)
        assert after.unsubscribed is True and after.revision == user.revision + 1
        entries = [e for e in await links.audit(user.id) if e.field == "unsubscribed"]
        assert [(e.actor, e.old, e.new) for e in entries] == [("link", False, True)]
        assert [e for e, _d in links.events] == ["user.updated"]
        assert links.events[0][1].unsubscribed is True
        r = await links.http.post(url, data=ONE_CLICK)
        assert r.status_code == 200
        assert (
            await links.get(user.id)
        ).revision == after.revision  # nothing written the second time
        assert len(links.events) == 1


async def test_one_click_as_multipart_form_data(links_env):
    """RFC 8058 allows multipart/form-data as well; some mailbox providers send it."""
    async with links_env() as links:
        user = await links.user(await links.channel())
        r = await links.http.post(
            f"/u/{links.token(user)}", files={"List-Unsubscribe": (None, "One-Click")}
        )
        assert r.status_code == 200
        assert (await links.get(user.id)).unsubscribed is True


async def test_page_buttons_set_frequency_unsubscribe_and_resubscribe(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel())
        url = f"/u/{links.token(user)}"
        r = await links.http.post(url, data={"frequency": "daily"})
        assert r.status_code == 200 and "Saved: a daily digest." in r.text
        assert (await links.get(user.id)).frequency.value == "daily"
        r = await links.http.post(url, data={"frequency": "disabled"})
        assert "no digests" in r.text and (await links.get(user.id)).frequency.value == "disabled"
        r = await links.http.post(url, data={"action": "unsubscribe"})
        assert "You are unsubscribed" in r.text and 'value="resubscribe"' in r.text
        assert (await links.get(user.id)).unsubscribed is True
        r = await links.http.post(url, data={"action": "resubscribe"})
        assert "You are subscribed again" in r.text
        assert (await links.get(user.id)).unsubscribed is False
        await links.http.post(url, data={"action": "unsubscribe"})
        r = await links.http.post(
            url, data={"frequency": "weekly"}
        )  # choosing a frequency resubscribes
        after = await links.get(user.id)
        assert (after.frequency.value, after.unsubscribed) == ("weekly", False)
        actors = {e.actor for e in await links.audit(user.id) if e.field}
        assert actors == {"link"}
        assert all(e == "user.updated" for e, _ in links.events) and len(links.events) == 6


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"frequency": "hourly"},
        {"action": "delete"},
        {"List-Unsubscribe": "Yes"},
        {"email": "evil@example.com"},
        {"unsubscribed": "true"},
    ],
)
async def test_a_post_that_says_nothing_valid_changes_nothing(links_env, body):
    async with links_env() as links:
        user = await links.user(await links.channel())
        r = await links.http.post(f"/u/{links.token(user)}", data=body)
        assert r.status_code == 400
        assert (await links.get(user.id)) == user
        assert links.events == []


async def test_click_redirects_to_the_signed_target_and_marks_last_active(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel())
        target = "https://gardens.test/articles/compost?utm=1"
        r = await links.http.get(f"/r/{links.token(user, Purpose.CLICK, target)}")
        assert r.status_code == 302 and r.headers["location"] == target
        assert_secure(r)
        after = await links.get(user.id)
        assert after.last_active == links.services.clock.now()
        # Only Last active moved: the subscription is as it was.
        assert (after.frequency, after.unsubscribed, after.email) == (
            user.frequency,
            user.unsubscribed,
            user.email,
        )


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(1)",
        "//evil.test/x",
        "/relative",
        "data:text/html,hi",
        "https://ok.test/\r\nSet-Cookie: x=1",
        "https:///nohost",
        "",
        "ftp://x.test/",
    ],
)
async def test_click_never_redirects_to_an_unsafe_target_even_when_signed(links_env, target):
    async with links_env() as links:
        user = await links.user(await links.channel())
        r = await links.http.get(f"/r/{links.token(user, Purpose.CLICK, target)}")
        assert r.status_code == 400 and "location" not in r.headers
        assert (await links.get(user.id)).last_active is None


async def test_a_get_on_every_route_changes_nothing(links_env):
    """Mail scanners follow links: only the click redirect records anything (Last active)."""
    async with links_env() as links:
        channel = await links.channel()
        user = await links.user(channel, frequency="daily")
        confirm = links.signer.sign(
            Claim(
                Purpose.CONFIRM,
                channel,
                "",
                '["new@example.com","",""]',
                int(links.services.clock.now().timestamp()) + 3600,
            )
        )
        paths = [
            "/healthz",
            f"/u/{links.token(user)}",
            f"/c/{confirm}",
            f"/signup/{channel}",
            "/",
            "/u/",
            f"/u/{links.token(user)}?action=unsubscribe&List-Unsubscribe=One-Click",
            f"/u/{links.token(user)}?frequency=weekly",
        ]
        for path in paths:
            for method in ("GET", "HEAD"):
                r = await links.http.request(method, path)
                assert r.status_code in (200, 404, 405), (method, path, r.status_code)
        assert (await links.get(user.id)) == user
        assert len(await links.audit(user.id)) == 1  # "user added" only
        page = await links.services.store.run(
            __import__("kuloo_daemon.store.users", fromlist=["x"]).list_page,
            channel,
            __import__("kuloo_daemon.store.users", fromlist=["x"]).Filters(),
            None,
            10,
        )
        assert page.total == 1  # the confirmation page created nobody
        assert links.events == []
