"""Double opt-in signup: nothing is stored until the emailed link is confirmed; one answer for
all."""

from __future__ import annotations

from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.tokens import Claim, Purpose

SITE = "https://www.gardens.test"


async def users_of(links, channel: int) -> list:
    page = await links.services.store.run(
        user_store.list_page, channel, user_store.Filters(), None, 100
    )
    return list(page.users)


async def test_signup_sends_a_confirmation_and_stores_nothing_until_confirmed(links_env):
    async with links_env() as links:
        channel = await links.channel()
        r = await links.http.post(
            f"/signup/{channel}",
            data={"email": "New.Reader@Example.com", "first_name": "Nia", "last_name": "Reed"},
        )
        assert r.status_code == 202 and "check your inbox" in r.text
        assert await users_of(links, channel) == []
        await links.wait_for_mail(1)
        (msg,) = links.mails()
        assert msg["To"] == "New.Reader@Example.com" and "confirm" in msg["Subject"].lower()
        (url,) = links.confirm_links()
        path = url[len(links.url) :]
        page = await links.http.get(path)  # a mail scanner opening the link confirms nothing
        assert (
            page.status_code == 200
            and "New.Reader@Example.com" in page.text
            and 'method="post"' in page.text
        )
        assert await users_of(links, channel) == []
        r = await links.http.post(path, data={"action": "confirm"})
        assert r.status_code == 200 and "You are subscribed" in r.text
        (user,) = await users_of(links, channel)
        assert (user.email, user.first_name, user.last_name, user.source.value) == (
            "New.Reader@Example.com",
            "Nia",
            "Reed",
            "signup",
        )
        assert (user.frequency.value, user.unsubscribed) == ("weekly", False)
        assert [(e.actor, e.note) for e in await links.audit(user.id)] == [
            ("link", "signup confirmed")
        ]
        assert [e for e, _ in links.events] == ["user.updated"]
        r = await links.http.post(path)  # confirming twice changes nothing
        assert (
            r.status_code == 200
            and len(await users_of(links, channel)) == 1
            and len(links.events) == 1
        )


async def test_the_answer_is_the_same_whether_the_address_is_known(links_env):
    async with links_env() as links:
        channel = await links.channel()
        known = await links.user(channel, "ada@example.com", first_name="Ada")
        answers = []
        for address in ("ada@example.com", "ADA@example.com", "someone.new@example.com"):
            r = await links.http.post(
                f"/signup/{channel}", data={"email": address, "first_name": "X"}
            )
            answers.append(
                (
                    r.status_code,
                    r.text,
                    sorted(k for k in r.headers if k not in ("date", "content-length")),
                )
            )
        assert answers[0] == answers[1] == answers[2]
        await links.wait_for_mail(3)
        assert (await links.get(known.id)) == known  # left as is until anyone confirms
        for url in links.confirm_links():
            await links.http.post(url[len(links.url) :])
        after = await links.get(known.id)
        assert (after.first_name, after.source, after.revision) == (
            "Ada",
            known.source,
            known.revision,
        )
        assert len(await users_of(links, channel)) == 2


async def test_confirming_resubscribes_an_unsubscribed_user(links_env):
    async with links_env() as links:
        channel = await links.channel()
        user = await links.user(channel, "back@example.com")
        await links.http.post(f"/u/{links.token(user)}", data={"List-Unsubscribe": "One-Click"})
        await links.http.post(f"/signup/{channel}", json={"email": "back@example.com"})
        await links.wait_for_mail(1)
        await links.http.post(links.confirm_links()[0][len(links.url) :])
        after = await links.get(user.id)
        assert after.unsubscribed is False
        assert [(e.field, e.actor, e.note) for e in await links.audit(user.id)][0] == (
            "unsubscribed",
            "link",
            "signup confirmed",
        )


async def test_json_signup_and_cors_for_allowed_origins_only(links_env):
    async with links_env() as links:
        channel = await links.channel()
        pre = await links.http.options(
            f"/signup/{channel}",
            headers={
                "origin": SITE,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == SITE
        assert "POST" in pre.headers["access-control-allow-methods"]
        r = await links.http.post(
            f"/signup/{channel}", json={"email": "js@example.com"}, headers={"origin": SITE}
        )
        assert r.status_code == 202 and r.json()["status"] == 202
        assert r.headers["access-control-allow-origin"] == SITE
        evil = "https://evil.test"
        pre = await links.http.options(
            f"/signup/{channel}", headers={"origin": evil, "access-control-request-method": "POST"}
        )
        assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
        r = await links.http.post(
            f"/signup/{channel}", json={"email": "victim@example.com"}, headers={"origin": evil}
        )
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        await links.wait_for_mail(1)
        assert [m["To"] for m in links.mails()] == ["js@example.com"]


async def test_bad_signups_are_refused_and_send_nothing(links_env):
    async with links_env() as links:
        channel = await links.channel()
        bad = [
            ({"email": ""}, 400),
            ({"email": "not-an-address"}, 400),
            ({"first_name": "No Email"}, 400),
            ({"email": "a@b.test", "first_name": "x" * 201}, 400),
            ({"email": "a@b.test", "last_name": "\x00"}, 400),
            ({"email": "a b@c.test"}, 400),
            ({"email": "a@b.test\r\nBcc: x@y.test"}, 400),
            ({"email": "x" * 300 + "@b.test"}, 400),
        ]
        for body, status in bad:
            r = await links.http.post(f"/signup/{channel}", data=body)
            assert r.status_code == status, body
        for body in (b"[1,2]", b"{not json", b'{"email": 5}', b'"\\ud800@x.test"'):
            r = await links.http.post(
                f"/signup/{channel}", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 400, body
        r = await links.http.post(
            f"/signup/{channel}", content=b"email=a@b.test", headers={"content-type": "text/xml"}
        )
        assert r.status_code == 400
        assert (
            await links.http.post(f"/signup/{channel + 5}", data={"email": "a@b.test"})
        ).status_code == 404
        assert (await links.http.get(f"/signup/{channel}")).status_code == 405
        assert links.mails() == [] and await users_of(links, channel) == []


async def test_one_confirmation_per_address_per_cooldown(links_env):
    async with links_env(links={"confirm_resend_minutes": 10}) as links:
        channel = await links.channel()
        for _ in range(5):
            assert (
                await links.http.post(f"/signup/{channel}", data={"email": "flood@example.com"})
            ).status_code == 202
        await links.http.post(f"/signup/{channel}", data={"email": "other@example.com"})
        await links.wait_for_mail(2)
        assert sorted(m["To"] for m in links.mails()) == ["flood@example.com", "other@example.com"]


async def test_expired_or_tampered_confirmation_links_create_nobody(links_env):
    async with links_env(links={"confirm_hours": 1}) as links:
        channel = await links.channel()
        await links.http.post(f"/signup/{channel}", data={"email": "late@example.com"})
        await links.wait_for_mail(1)
        path = links.confirm_links()[0][len(links.url) :]
        r = await links.http.post(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"))
        assert r.status_code == 400
        await links.services.clock.advance(3601)
        r = await links.http.post(path)
        assert r.status_code == 400
        # A confirmation claim must hold [email, first, last]; a signed oddity is still refused.
        odd = links.signer.sign(Claim(Purpose.CONFIRM, channel, "", '{"email": "x@y.test"}', 0))
        assert (await links.http.post(f"/c/{odd}")).status_code == 400
        assert await users_of(links, channel) == []


async def test_with_dkim_the_confirmation_is_signed_and_a_misaligned_channel_gets_none(links_env):
    """docs/delivery.md, "DKIM": the confirmation leaves signed, like every other email."""
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from kuloo_daemon.rules.signing import load_key, txt_value

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    key = load_key(pem, "gardens.test", "k1")
    async with links_env(dkim={"domain": "gardens.test", "selector": "k1"}) as links:
        (links.root / "creds" / "dkim-private-key").write_text(pem)
        channel = await links.channel()  # news@gardens.test
        other = await links.channel(name="Elsewhere")
        await links.services.store.run(
            channel_store.update,
            other,
            {"sender": "E <e@elsewhere.test>"},
            False,
            None,
            links.services.clock.now(),
        )
        assert (
            await links.http.post(f"/signup/{other}", data={"email": "a@example.com"})
        ).status_code == 202
        assert (
            await links.http.post(f"/signup/{channel}", data={"email": "b@example.com"})
        ).status_code == 202
        await links.wait_for_mail(1)
        (path,) = list((links.root / "mail" / "new").iterdir())
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        # As an MTA delivers it: the return path first (not signed), then the signature.
        assert raw.startswith(b"Return-Path: <news@gardens.test>\r\nDKIM-Signature:")
        assert b"To: b@example.com" in raw
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: txt_value(key))
