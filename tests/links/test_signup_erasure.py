"""A signup confirmation issued before an erasure is refused (issue 27 item 3,
docs/operations.md): the erasure wins over an older link; a fresh signup ends the tombstone."""

from __future__ import annotations

from pathlib import Path

from kuloo_daemon.store import erasure
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.models import ErasedUser
from kuloo_daemon.vocabulary import Actor

KEY = "links-tests-erasure-key"


async def _stones():
    return await ErasedUser.all()


async def test_a_confirmation_link_issued_before_the_erasure_brings_nobody_back(links_env):
    async with links_env() as links:
        store = links.services.store
        (Path(links.services.config.credentials_dir()) / "erasure-key").write_text(KEY + "\n")
        channel = await links.channel()
        user = await store.run(
            user_store.add,
            channel,
            {"email": "erin@example.com"},
            Actor.ADMIN,
            links.services.clock.now(),
        )
        await links.http.post(f"/signup/{channel}", data={"email": "erin@example.com"})
        await links.wait_for_mail(1)
        old = links.confirm_links()[0][len(links.url) :]
        await links.services.clock.advance(60)
        await store.run(
            erasure.erase, user.id, "erin@example.com", KEY.encode(), links.services.clock.now()
        )
        await links.services.clock.advance(60)
        r = await links.http.post(old)
        assert r.status_code == 200 and "no longer valid" in r.text.lower()
        assert (
            await store.run(user_store.list_page, channel, user_store.Filters(), None, 10)
        ).total == 0
        assert len(await store.run(_stones)) == 1
        # A signup made after the erasure ends the tombstone: the user is back, same KulooId.
        await links.http.post(f"/signup/{channel}", data={"email": "erin@example.com"})
        await links.wait_for_mail(2)
        fresh = [u for u in links.confirm_links() if u[len(links.url) :] != old]
        assert (await links.http.post(fresh[0][len(links.url) :])).status_code == 200
        back = await store.run(user_store.get_by_email, channel, "erin@example.com")
        assert back.kuloo_id == user.kuloo_id and await store.run(_stones) == []
