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
        assert (first["imported"], first["updated"], first["unchanged"], first["withdrawn"]) == (5, 0, 0, 0)
        again = await env.delivery.import_articles(ch, "sample")
        assert (again["imported"], again["updated"], again["unchanged"], again["withdrawn"]) == (0, 0, 5, 0)

        # queue the welcome article for a user, then withdraw it: the queued mail is cancelled
        await env.user(ch, "ann@example.com", tags=["welcome"])
        queued, _, _ = await env.store.run(store.plan, ch, env.clock.now(), schedule.decide, sender_domain)
        assert queued == 1
        (folder / "sequence" / "01-welcome.md").unlink()
        tools = folder / "sequence" / "03-tools.md"
        tools.write_text(tools.read_text().replace("Five tools", "Six tools"))
        (folder / "broken.md").write_text("---\ntitle: [oops\n---\nbody\n")
        (folder / "nodate.md").write_text("---\ntitle: No date\n---\nbody\n")
        (folder / "latin1.md").write_bytes("---\ntitle: caf\xe9\n---\n".encode("latin-1"))
        (folder / "notes.txt").write_text("not an article")
        report = await env.delivery.import_articles(ch, "sample")
        assert (report["imported"], report["updated"], report["unchanged"], report["withdrawn"]) == (0, 1, 3, 1)
        assert report["cancelled"] == 1
        assert sorted(p["file"] for p in report["problems"]) == [
            "broken.md", "latin1.md", "newsletter/2026-01-12-compost.md", "nodate.md"]
        assert all(p["problem"] for p in report["problems"])
        articles = {a.key: a for a in await env.store.run(store.list_articles, ch)}
        assert articles["welcome-2"].version == 2 and articles["welcome-2"].title == "Six tools worth buying"
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
        inside.write_text("---\nid: inside\ntitle: Inside\npublished_at: 2026-01-01T08:00:00Z"
                          "\n---\nbody\n")
        (folder / "alias.md").symlink_to(inside)
        report = await env.delivery.import_articles(ch, "sample")
        leaks = [p for p in report["problems"] if p["file"] in ("leak.md", "sequence/deep.md")]
        assert [p["file"] for p in leaks] == ["leak.md", "sequence/deep.md"], report["problems"]
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
    (folder / f"{name}.md").write_text(f"---\nformat: clip\nurl: {url}\npublished_at: 2026-01-01\n---\n")


async def test_clipping_failures_are_problem_lines(env_factory, pages):
    base = f"http://127.0.0.1:{pages.server_port}"
    async with env_factory(articles={"clip_max_bytes": 100_000, "clip_timeout_seconds": 1.5}) as env:
        ch = await env.channel()
        await write_clip(env, "huge", f"{base}/huge.html")
        await write_clip(env, "slow", f"{base}/slow.html")  # answers after 3 s; the timeout is 1.5 s
        await write_clip(env, "missing", f"{base}/nope.html")
        await write_clip(env, "good", f"{base}/compost.html")
        report = await env.delivery.import_articles(ch, "clips")
        problems = {p["file"]: p["problem"] for p in report["problems"]}
        assert "larger than 100000 bytes" in problems["huge.md"]
        assert "did not answer within 1.5s" in problems["slow.md"]
        assert "HTTP 404" in problems["missing.md"]
        assert report["imported"] == 1


async def test_private_and_loopback_addresses_are_refused_unless_allowed():
    for url in ("http://127.0.0.1/x", "http://localhost:8080/", "http://10.1.2.3/", "http://[::1]/",
                "http://169.254.169.254/latest/meta-data/", "http://192.168.0.1/"):
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
