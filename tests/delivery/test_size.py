"""Size (docs/delivery.md, "Size"): an article whose HTML part would pass 100 KB is not
imported; a digest too big carries its first articles in full and the rest as titles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kuloo_daemon.delivery.message import Envelope, largest_html_bytes
from kuloo_daemon.delivery.render import Piece, render_email
from kuloo_daemon.store import delivery as store
from kuloo_daemon.tokens import Signer
from kuloo_daemon.vocabulary import OutboxState

DAY = 86400
SIGNER = Signer([b"size-test-key-0123456789"])


def words(kb: int, tag: str) -> str:
    """About ``kb`` KB of text."""
    out, size, i = [], 0, 0
    while size < kb * 1024:
        out.append(f"{tag}{i}")
        size += len(out[-1]) + 1
        i += 1
    return " ".join(out)


def write(
    folder: Path, name: str, title: str, body: str, when: str = "2026-01-06T07:00:00Z"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"---\ntitle: {title}\npublished_at: {when}\n---\n{body}\n")


def test_the_size_counts_the_real_public_url_the_longest_greeting_and_tokens():
    links = "\n".join(f"[l{i}](https://example.com/{i})" for i in range(200))
    r = render_email([Piece(1, 1, "Links", "markdown", links)], channel="C", postal_address="")
    short = Envelope(1, "C", "c@c.test", "https://l.test")
    long = replace(short, public_url="https://links.example.com/" + "p" * 200)
    plain = len(r.html.fill({s: "" for s in r.html.slots}).encode())
    assert largest_html_bytes(r, long, SIGNER) - largest_html_bytes(r, short, SIGNER) == 202 * (
        len(long.public_url) - len(short.public_url)
    )
    assert largest_html_bytes(r, short, SIGNER) > plain + 200 + 202 * 100  # greeting + tokens


async def test_an_article_too_big_is_not_imported_and_a_stored_version_stays(env_factory):
    async with env_factory() as env:
        ch = await env.channel()
        folder = env.services.config.articles_root / "big"
        write(folder, "a.md", "Fine", "Small enough.")
        assert (await env.delivery.import_articles(ch, "big"))["imported"] == 1
        write(folder, "a.md", "Fine", words(120, "grown"))  # the same article grew
        write(folder, "b.md", "Huge", words(120, "huge"))
        report = await env.delivery.import_articles(ch, "big")
        assert (report["imported"], report["updated"], report["withdrawn"]) == (0, 0, 0)
        problems = {p["file"]: p["problem"] for p in report["problems"]}
        assert set(problems) == {"big/a.md", "big/b.md"}  # relative to [articles] root
        assert problems["big/b.md"].startswith("not imported: its HTML part would be 1")
        assert "KB, over the 100 KB" in problems["big/b.md"]
        (article,) = await env.store.run(store.list_articles, ch)
        assert (article.title, article.version, article.withdrawn_at) == ("Fine", 1, None)


async def test_a_digest_too_big_carries_the_first_articles_in_full_and_the_rest_as_titles(
    env_factory, smtp_sink
):
    async with env_factory() as env:
        ch = await env.channel()
        folder = env.services.config.articles_root / "digest"
        for n, tag in enumerate(("first", "second", "third")):
            write(
                folder, f"{n}.md", f"Article {tag}", words(40, tag), f"2026-01-0{6 + n}T07:00:00Z"
            )
        report = await env.delivery.import_articles(ch, "digest")
        assert report["imported"] == 3, report
        await env.user(ch, "fay@example.com", frequency="weekly")
        await env.advance(7 * DAY)
        (msg,) = smtp_sink.to("fay@example.com")
        assert msg["Subject"] == "Article first — and 2 more from Kuloo Gardens"
        html = msg.get_body(("html",)).get_content()
        assert len(html.encode()) <= 100 * 1024
        assert "first10 " in html and "second10 " in html  # two fit in full
        assert "third10 " not in html and "Article third" in html and "Also new" in html
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.SENT]
