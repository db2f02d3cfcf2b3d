"""articles.import: versions, withdrawals, problem lines, clipping with its limits."""

from __future__ import annotations

import pytest

from kuloo_daemon.delivery import schedule
from kuloo_daemon.delivery.clip import ClipError, check_address
from kuloo_daemon.delivery.message import sender_domain
from kuloo_daemon.delivery.service import ImportError_
from kuloo_daemon.store import delivery as store
from kuloo_daemon.vocabulary import OutboxState


async def test_reimport_versions_withdrawals_and_problems(env_factory, smtp_sink):
    async with env_factory() as env:
        ch = await env.channel()
        folder = env.services.config.articles_root / "sample"
        first = await env.delivery.import_articles(ch, "sample")
        assert (first["imported"], first["updated"], first["unchanged"], first["withdrawn"]) == (
            5,
            0,
            0,
            0,
        )
        again = await env.delivery.import_articles(ch, "sample")
        assert (again["imported"], again["updated"], again["unchanged"], again["withdrawn"]) == (
            0,
            0,
            5,
            0,
        )

        # queue the welcome article for a user, then withdraw it: the queued mail is cancelled
        await env.user(ch, "ann@example.com", tags=["welcome"])
        queued, _, _ = await env.store.run(
            store.plan, ch, env.clock.now(), schedule.decide, sender_domain
        )
        assert queued == 1
        (folder / "sequence" / "01-welcome.md").unlink()
        tools = folder / "sequence" / "03-tools.md"
        tools.write_text(tools.read_text().replace("Five tools", "Six tools"))
        (folder / "broken.md").write_text("---\ntitle: [oops\n---\nbody\n")
        (folder / "nodate.md").write_text("---\ntitle: No date\n---\nbody\n")
        (folder / "latin1.md").write_bytes("---\ntitle: caf\xe9\n---\n".encode("latin-1"))
        (folder / "notes.txt").write_text("not an article")
        report = await env.delivery.import_articles(ch, "sample")
        assert (
            report["imported"],
            report["updated"],
            report["unchanged"],
            report["withdrawn"],
        ) == (0, 1, 3, 1)
        assert report["cancelled"] == 1
        assert sorted(p["file"] for p in report["problems"]) == [
            "sample/broken.md",
            "sample/latin1.md",
            "sample/newsletter/2026-01-12-compost.md",
            "sample/nodate.md",
        ]
        assert all(p["problem"] for p in report["problems"])
        articles = {a.key: a for a in await env.store.run(store.list_articles, ch)}
        assert (
            articles["welcome-2"].version == 2
            and articles["welcome-2"].title == "Six tools worth buying"
        )
        assert articles["welcome-1"].withdrawn_at is not None
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.CANCELLED]
        # never sent again: the user's sequence now starts with the next article, its 2-day
        # delay counted from when the user got the tag
        await env.delivery.run(None)
        assert smtp_sink.subjects("ann@example.com") == []
        await env.advance(2 * 86400)
        assert smtp_sink.subjects("ann@example.com") == ["Six tools worth buying"]


async def test_the_path_must_be_under_the_articles_root(env_factory):
    async with env_factory() as env:
        ch = await env.channel()
        for path in ("../../etc", "/etc", "", "missing"):
            with pytest.raises(ImportError_):
                await env.delivery.import_articles(ch, path)


async def test_a_symlinked_file_leading_outside_the_root_is_a_problem_naming_it(env_factory):
    """Issue 20 item 9: a link to the link-signing key was read and its text reported.
    Every file is resolved; one outside ``[articles] root`` is refused unread, a link that
    stays inside the root is imported. Planted bug: the per-file check removed."""
    async with env_factory() as env:
        ch = await env.channel()
        root = env.services.config.articles_root
        secret = root.parent / "outside-secret.md"  # a valid article: it would be imported
        secret.write_text("---\nid: stolen\ntitle: TOP-SECRET-KEY\n---\nTOP-SECRET-KEY\n")
        folder = root / "sample"
        (folder / "leak.md").symlink_to(secret)
        (folder / "sequence" / "deep.md").symlink_to(secret)
        inside = root / "elsewhere.md"  # inside the root, outside the imported folder
        inside.write_text(
            "---\nid: inside\ntitle: Inside\npublished_at: 2026-01-01T08:00:00Z\n---\nbody\n"
        )
        (folder / "alias.md").symlink_to(inside)
        report = await env.delivery.import_articles(ch, "sample")
        leaks = [
            p
            for p in report["problems"]
            if p["file"] in ("sample/leak.md", "sample/sequence/deep.md")
        ]
        assert [p["file"] for p in leaks] == ["sample/leak.md", "sample/sequence/deep.md"], report[
            "problems"
        ]
        assert all("outside [articles] root" in p["problem"] for p in leaks)
        assert "TOP-SECRET-KEY" not in repr(report)
        keys = {a.key for a in await env.store.run(store.list_articles, ch)}
        assert "stolen" not in keys and "inside" in keys


async def test_clipping_keeps_the_main_content_with_absolute_links(env_factory, pages):
    async with env_factory(page_port=pages.server_port) as env:
        ch = await env.channel()
        report = await env.delivery.import_articles(ch, "sample")
        assert report["problems"] == []
        clip = next(a for a in await env.store.run(store.list_articles, ch) if a.format == "clip")
        assert clip.title == "Compost in winter"
        body = (await env.store.run(store.article_bodies, [clip.id]))[clip.id].body
        base = f"http://127.0.0.1:{pages.server_port}"
        assert "Turn the heap once a month" in body
        assert "Popular" not in body and "Privacy" not in body  # navigation and footer dropped
        assert f'href="{base}/guides/compost"' in body and f'src="{base}/images/heap.jpg"' in body
        preview = await env.delivery.preview(clip.id, None)
        assert "Turn the heap" in preview["text"] and preview["subject"] == "Compost in winter"


async def write_clip(env, name: str, url: str) -> None:
    folder = env.services.config.articles_root / "clips"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.md").write_text(
        f"---\nformat: clip\nurl: {url}\npublished_at: 2026-01-01\n---\n"
    )


async def test_clipping_failures_are_problem_lines(env_factory, pages):
    base = f"http://127.0.0.1:{pages.server_port}"
    async with env_factory(
        articles={"clip_max_bytes": 100_000, "clip_timeout_seconds": 1.5}
    ) as env:
        ch = await env.channel()
        await write_clip(env, "huge", f"{base}/huge.html")
        await write_clip(
            env, "slow", f"{base}/slow.html"
        )  # answers after 3 s; the timeout is 1.5 s
        await write_clip(env, "missing", f"{base}/nope.html")
        await write_clip(env, "good", f"{base}/compost.html")
        report = await env.delivery.import_articles(ch, "clips")
        problems = {p["file"]: p["problem"] for p in report["problems"]}
        assert "larger than 100000 bytes" in problems["clips/huge.md"]
        assert "did not answer within 1.5s" in problems["clips/slow.md"]
        assert "HTTP 404" in problems["clips/missing.md"]
        assert report["imported"] == 1


async def test_private_and_loopback_addresses_are_refused_unless_allowed():
    for url in (
        "http://127.0.0.1/x",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.0.1/",
    ):
        with pytest.raises(ClipError, match="private or loopback"):
            await check_address(url, allow_private=False)
        await check_address(url, allow_private=True)
    with pytest.raises(ClipError):
        await check_address("file:///etc/passwd", allow_private=True)


async def test_a_clip_is_refused_by_default(env_factory, pages):
    async with env_factory(articles={"allow_private_urls": False}) as env:
        ch = await env.channel()
        await write_clip(env, "local", f"http://127.0.0.1:{pages.server_port}/compost.html")
        report = await env.delivery.import_articles(ch, "clips")
        assert "private or loopback" in report["problems"][0]["problem"]
        assert pages.hits == []


# --------------------------------------------------------------------------- issue 24 item 2


async def test_importing_a_subfolder_withdraws_only_what_lay_under_it(env_factory):
    """Issue 24 item 2: importing ``newsletter`` withdrew the three sequence articles.
    Keys and files are relative to ``[articles] root``; only articles whose file lay under
    the imported path are withdrawn, and the answer names each one. Planted bug:
    ``_under`` always true (every article outside the folder withdrawn)."""
    async with env_factory() as env:
        ch = await env.channel()
        first = await env.delivery.import_articles(ch, "sample")
        assert first["withdrawn"] == 0
        files = {a.key: a.source_file for a in await env.store.run(store.list_articles, ch)}
        assert files["welcome-1"] == "sample/sequence/01-welcome.md"
        again = await env.delivery.import_articles(ch, "sample/newsletter")
        assert again["withdrawn"] == 0 and again["withdrawn_articles"] == [], again
        folder = env.services.config.articles_root / "sample"
        (folder / "newsletter" / "2026-01-06-frost.md").unlink()
        report = await env.delivery.import_articles(ch, "sample/newsletter")
        assert report["withdrawn"] == 1
        [gone] = report["withdrawn_articles"]
        assert (gone["key"], gone["title"], gone["file"]) == (
            "news-frost",
            "Frost is coming",
            "sample/newsletter/2026-01-06-frost.md",
        )
        listed = await env.store.run(store.list_articles, ch)
        active = {a.key for a in listed if a.withdrawn_at is None}
        assert {"welcome-1", "welcome-2", "onboarding-1"} <= active
        assert "news-frost" not in active


async def test_a_dry_run_lists_what_would_change_and_writes_nothing(env_factory, pages):
    """``articles.import {"dry_run": true}``: what would be new, changed and withdrawn, with
    no clipping and no writes (the TUI's confirmation). Planted bugs: the dry run writing
    (``dry_run`` ignored in the store), a dry run that clips."""
    async with env_factory(page_port=pages.server_port) as env:
        ch = await env.channel()
        dry_first = await env.delivery.import_articles(ch, "sample", dry_run=True)
        assert dry_first["dry_run"] is True
        assert dry_first["imported"] == 5  # the clip is not fetched
        assert "welcome-1" in dry_first["new"]
        assert await env.store.run(store.list_articles, ch) == []
        assert pages.hits == []
        await env.delivery.import_articles(ch, "sample")
        hits = len(pages.hits)
        before = await env.store.run(store.list_articles, ch)
        folder = env.services.config.articles_root / "sample"
        (folder / "sequence" / "01-welcome.md").unlink()
        tools = folder / "sequence" / "03-tools.md"
        tools.write_text(tools.read_text().replace("Five tools", "Six tools"))
        dry = await env.delivery.import_articles(ch, "sample", dry_run=True)
        assert dry["changed"] == ["welcome-2"] and dry["new"] == []
        assert [a["key"] for a in dry["withdrawn_articles"]] == ["welcome-1"]
        assert dry["withdrawn"] == 1 and dry["cancelled"] == 0
        assert await env.store.run(store.list_articles, ch) == before
        assert len(pages.hits) == hits


async def _make_old_style(article_id: int, key: str) -> None:
    from kuloo_daemon.store.models import Article

    await Article.filter(id=article_id).update(key=key, source_file=key)


async def test_old_folder_relative_keys_are_adopted_on_the_first_import(env_factory):
    """Before, a file without ``id`` was keyed by its path relative to the imported folder.
    The first import adopts those keys (same article, same version: nothing is sent
    again), whichever folder is imported. Planted bug: no adoption (a new article and a
    withdrawn old one)."""
    async with env_factory() as env:
        ch = await env.channel()
        root = env.services.config.articles_root
        (root / "notes" / "deep").mkdir(parents=True)
        for name in ("a.md", "deep/b.md"):
            (root / "notes" / name).write_text(
                f"---\ntitle: {name}\npublished_at: 2026-01-01\n---\nbody\n"
            )
        await env.delivery.import_articles(ch, "notes")
        rows = {a.key: a for a in await env.store.run(store.list_articles, ch)}
        assert set(rows) == {"notes/a.md", "notes/deep/b.md"}
        for key, row in rows.items():  # as an older daemon stored them (importing "notes")
            await env.store.run(_make_old_style, row.id, key.removeprefix("notes/"))
        report = await env.delivery.import_articles(ch, ".")
        assert (report["unchanged"], report["withdrawn"]) == (2, 0), report
        assert not [k for k in report["new"] if k.startswith("notes/")]  # the sample's are new
        after = {
            a.key: a
            for a in await env.store.run(store.list_articles, ch)
            if a.key.startswith("notes/")
        }
        assert set(after) == {"notes/a.md", "notes/deep/b.md"}
        assert {a.id for a in after.values()} == {a.id for a in rows.values()}
        assert all(a.version == 1 and a.source_file == a.key for a in after.values())


async def test_a_withdrawn_file_that_reappears_is_active_again_and_never_resent(
    env_factory, smtp_sink
):
    """A withdrawn file that comes back makes its article active again; what was sent is
    never sent again. Planted bug: a reappearing article not un-withdrawn."""
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "ann@example.com", tags=["welcome"])
        await env.delivery.run(None)
        assert smtp_sink.subjects("ann@example.com") == ["Welcome to Kuloo Gardens"]
        welcome = env.services.config.articles_root / "sample" / "sequence" / "01-welcome.md"
        text = welcome.read_text()
        welcome.unlink()
        gone = await env.delivery.import_articles(ch, "sample/sequence")
        assert [a["key"] for a in gone["withdrawn_articles"]] == ["welcome-1"]
        welcome.write_text(text)
        back = await env.delivery.import_articles(ch, "sample/sequence")
        assert back["updated"] == 1 and back["changed"] == ["welcome-1"]
        row = next(a for a in await env.store.run(store.list_articles, ch) if a.key == "welcome-1")
        assert row.withdrawn_at is None and row.version == 1
        await env.advance(3 * 86400)
        assert smtp_sink.subjects("ann@example.com") == [
            "Welcome to Kuloo Gardens",
            "Five tools worth buying",
        ]
