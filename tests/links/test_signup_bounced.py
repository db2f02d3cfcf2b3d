"""Signup confirmations and bounces (issue 26; docs/delivery.md, "Bounces and complaints").

A bounced address gets no confirmation email — in that channel; the requester is answered
exactly as for any signup (no enumeration). With ``[bounces] domain`` set, a confirmation
leaves with the channel's signed ``c-`` return path; without, with the sender's address.
Real links service on loopback, a SQLite file, confirmations in a real Maildir.
"""

from __future__ import annotations

import trio

from kuloo_daemon.rules.bounces import Bounce, Kind, VerpKind, VerpSigner, VerpToken
from kuloo_daemon.store import bounces as bounce_store

from .conftest import KEY

BOUNCES = "bounces.gardens.test"


async def bounce(links, user) -> None:
    refusal = Bounce(
        Kind.HARD,
        "5.1.1",
        "550 5.1.1 User unknown",
        VerpToken(VerpKind.BOUNCE, user.kuloo_id, outbox_id=1),
    )
    changed = await links.services.store.run(
        bounce_store.refused_at_rcpt, [refusal], links.services.clock.now()
    )
    assert changed == [user.id]


async def test_a_bounced_address_gets_no_confirmation_and_the_same_answer(links_env):
    """Planted bugs: the mailer does not ask whether the address bounced; it asks about
    any channel rather than the signup's."""
    async with links_env() as links:
        channel = await links.channel()
        other = await links.channel(name="Other List")
        await bounce(links, await links.user(channel, "gone@example.com"))
        await links.user(channel, "ada@example.com")
        answers = []
        for target, address in (
            (channel, "Gone@Example.com"),  # the bounced user, spelled otherwise
            (channel, "ada@example.com"),  # known, not bounced
            (channel, "new@example.com"),  # unknown
            (other, "gone@example.com"),  # bounced in the other channel only
        ):
            r = await links.http.post(f"/signup/{target}", data={"email": address})
            answers.append((r.status_code, r.text))
            js = await links.http.post(
                f"/signup/{target}",
                json={"email": address},
                headers={"origin": "https://www.gardens.test"},
            )
            answers.append((js.status_code, js.text))
        html_answers, json_answers = set(answers[0::2]), set(answers[1::2])
        assert len(html_answers) == 1 and len(json_answers) == 1
        assert next(iter(html_answers))[0] == 202
        # The queue is first in, first out: once the later six arrived (each address asked
        # twice), the first two were read.
        await links.wait_for_mail(6)
        await trio.sleep(0.2)
        sent = sorted((str(m["To"]), str(m["Subject"])) for m in links.mails())
        expected = [
            ("ada@example.com", "Please confirm your subscription to Kuloo Gardens"),
            ("gone@example.com", "Please confirm your subscription to Other List"),
            ("new@example.com", "Please confirm your subscription to Kuloo Gardens"),
        ]
        assert sent == sorted(expected * 2)


async def test_a_confirmations_return_path_is_the_channels_c_address(links_env):
    """Planted bug: the confirmation leaves with the sender's address as its return path."""
    async with links_env(bounces={"domain": BOUNCES, "maildir": "bounce-mail"}) as links:
        channel = await links.channel()
        r = await links.http.post(f"/signup/{channel}", data={"email": "new@example.com"})
        assert r.status_code == 202
        await links.wait_for_mail(1)
        (msg,) = links.mails()
        return_path = str(msg["Return-Path"]).strip("<>")
        assert return_path.endswith(f"@{BOUNCES}") and return_path.startswith("c-")
        token = VerpSigner([KEY.encode()]).verify(return_path)
        assert token is not None and (token.kind, token.channel) == (VerpKind.CONFIRM, channel)
        assert msg["From"] == "Kuloo Gardens <news@gardens.test>"  # never changes


async def test_without_a_bounce_domain_the_return_path_is_the_sender(links_env):
    async with links_env() as links:
        channel = await links.channel()
        await links.http.post(f"/signup/{channel}", data={"email": "new@example.com"})
        await links.wait_for_mail(1)
        (msg,) = links.mails()
        assert msg["Return-Path"] == "<news@gardens.test>"
