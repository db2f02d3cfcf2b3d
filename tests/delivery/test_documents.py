"""Article files: front matter parsed into documents; every problem a readable line."""

from datetime import UTC, datetime

import pytest

from kuloo_daemon.delivery.documents import Document, parse

GOOD = """---
title: Welcome aboard
tags: [welcome]
published_at: 2026-01-01
delay_seconds: 3600
---
Hello **there**.
"""


def test_a_good_markdown_file():
    doc = parse("seq/01-welcome.md", GOOD)
    assert isinstance(doc, Document)
    assert (doc.key, doc.title, doc.format, doc.tags, doc.delay_seconds) == (
        "seq/01-welcome.md",
        "Welcome aboard",
        "markdown",
        ("welcome",),
        3600,
    )
    assert doc.published_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert doc.body.strip() == "Hello **there**."


def test_id_from_front_matter_wins_over_the_path_and_the_hash_sees_content_changes():
    a = parse("a.md", GOOD.replace("title:", "id: welcome-1\ntitle:"))
    b = parse("moved/elsewhere.md", GOOD.replace("title:", "id: welcome-1\ntitle:"))
    assert a.key == b.key == "welcome-1" and a.content_hash == b.content_hash
    c = parse("a.md", GOOD.replace("there", "you"))
    assert c.content_hash != parse("a.md", GOOD).content_hash


def test_html_and_times_with_offsets():
    doc = parse(
        "n.html", "---\ntitle: News\npublished_at: 2026-01-02T10:00:00+02:00\n---\n<p>Hi</p>\n"
    )
    assert doc.format == "html" and doc.tags == ()
    assert doc.published_at == datetime(2026, 1, 2, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("---\ntitle: [unclosed\n---\nbody", "not valid YAML"),
        (
            "---\ntitle: T\npublished: 2026-01-01\n---\nbody",
            "'published' is written 'published_at'",
        ),
        (
            "---\ntitle: T\npublished_at: 2026-01-01\ndelay: 3d\n---\nbody",
            "'delay' is written 'delay_seconds'",
        ),
        (
            "---\ntitle: T\npublished_at: 2026-01-01\ndelay_seconds: -5\n---\nbody",
            "'delay_seconds' must be",
        ),
        ("---\ntitle: T\npublished_at: soon\n---\nbody", "published_at: 'soon'"),
        ("---\ntitle: T\n---\nbody", "'published_at' is missing"),
        (
            "---\ntitle: T\npublished_at: 2026-01-01\nformat: pdf\n---\nbody",
            "'format' must be one of",
        ),
        ("---\ntitle: T\npublished_at: 2026-01-01\nformat: clip\n---\n", "a clip needs 'url'"),
        (
            "---\ntitle: T\npublished_at: 2026-01-01\ncolour: red\n---\nbody",
            "unknown front-matter keys: colour",
        ),
        ("---\ntitle: T\npublished_at: 2026-01-01\n---\n   \n", "no body"),
        ("---\npublished_at: 2026-01-01\n---\nbody", "'title' is missing"),
        (
            "---\ntitle: T\npublished_at: 2026-01-01\ntags: [1, 2]\n---\nbody",
            "'tags' must be a list",
        ),
    ],
)
def test_problems_are_reported_not_raised(text, problem):
    result = parse("x.md", text)
    assert isinstance(result, str) and problem in result, result


def test_a_clip_needs_no_body():
    doc = parse(
        "c.md", "---\nformat: clip\nurl: https://example.com/post\npublished_at: 2026-01-01\n---\n"
    )
    assert doc.format == "clip" and doc.url == "https://example.com/post" and doc.body == ""
