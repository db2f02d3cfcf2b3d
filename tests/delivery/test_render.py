"""Rendering: once per article version, CSS inlined without the network, safe for major clients."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import lxml.html
import pytest

from kuloo_daemon.delivery import render
from kuloo_daemon.delivery.message import Envelope, Recipient, build, personalise
from kuloo_daemon.delivery.render import MUST_WORK, Piece, features_used, render_email, unsupported
from kuloo_daemon.tokens import Purpose, Signer

SIGNER = Signer([b"render-test-key-0123456789"])
ENVELOPE = Envelope(
    3,
    "Kuloo Gardens",
    "Kuloo Gardens <news@gardens.test>",
    "https://links.kuloo.test",
    mailto="unsubscribe@gardens.test",
)
ANN = Recipient("K-ann", "ann@example.com", "Ann <b>", "Lee")
NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)

MARKDOWN = Piece(
    1,
    1,
    "Plan your beds",
    "markdown",
    """Intro with a [guide](https://example.com/guide?a=1&b=2).

| Bed | Spring |
|-----|--------|
| A   | peas   |

```python
print("hello")
```
""",
)


def render_one(piece=MARKDOWN, postal="1 Road\nTown"):
    return render_email([piece], channel="Kuloo Gardens", postal_address=postal)


def test_markdown_tables_and_fenced_code_in_a_table_based_template_with_inlined_css():
    rendered = render_one()
    html, text, links = personalise(rendered, ENVELOPE, ANN, SIGNER)
    doc = lxml.html.document_fromstring(html)
    assert doc.xpath("//table[@role='presentation']"), "the layout is table-based"
    assert doc.xpath("//td/table//th[normalize-space()='Bed']"), "the Markdown table is rendered"
    assert doc.xpath("//pre/code") and 'print("hello")' in html
    # CSS is inlined; the one <style> left holds what cannot be inlined (media queries for
    # narrow screens and dark mode), kept beside the inline styles with the classes they name.
    (style,) = doc.xpath("//style")
    assert "@media screen and (max-width: 620px)" in style.text
    assert "prefers-color-scheme: dark" in style.text
    assert "font-family" not in style.text and "padding:24px" in html.replace(" ", "")  # inlined
    assert not doc.xpath("//link")
    assert "background-color:#1e3a8a" in html.replace(" ", "")
    assert "Hi Ann &lt;b&gt;," in html and "Hi Ann <b>," in text  # escaped in HTML only
    assert "1 Road<br>Town" in html and "1 Road\nTown" in text
    # the article's link is a signed click link for this user; the target is in the token
    assert rendered.links == ("https://example.com/guide?a=1&b=2",)
    click = links["link0"]
    assert click.startswith("https://links.kuloo.test/r/") and "example.com" not in click
    claim = SIGNER.verify(click.rsplit("/", 1)[1], NOW, Purpose.CLICK)
    assert (claim.kuloo_id, claim.target) == ("K-ann", "https://example.com/guide?a=1&b=2")
    assert f"{links['unsubscribe']}" in text and links["unsubscribe"] in html


def test_an_external_stylesheet_is_never_fetched(pages):
    url = f"http://127.0.0.1:{pages.server_port}/site.css"
    piece = Piece(
        2,
        1,
        "Linked CSS",
        "html",
        f'<html><head><link rel="stylesheet" href="{url}"></head><body><p>Hi</p></body></html>',
    )
    rendered = render_one(piece)
    html = rendered.html.fill({s: "x" for s in rendered.html.slots})
    assert pages.hits == []  # nothing asked the server for anything
    assert url not in html  # and the link is gone, so no mail client fetches it either
    # premailer itself, with our settings, leaves a stylesheet link alone rather than fetching it
    assert url in render.inline_css(
        f'<html><head><link rel="stylesheet" href="{url}"></head><body></body></html>'
    )
    assert pages.hits == []


def test_the_plain_text_part_and_the_headers():
    rendered = render_one()
    msg = build(rendered, ENVELOPE, ANN, SIGNER, msg_id="<kuloo.3.42@gardens.test>", date=NOW)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    text = parsed.get_body(("plain",)).get_content()
    assert "<table" not in text and "Bed" in text and "peas" in text
    assert parsed["Message-ID"] == "<kuloo.3.42@gardens.test>"
    assert parsed["To"] == '"Ann <b> Lee" <ann@example.com>'
    assert parsed["List-Id"] == "Kuloo Gardens <kuloo-gardens.3.gardens.test>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = str(parsed["List-Unsubscribe"])
    assert unsub.startswith("<https://links.kuloo.test/u/") and unsub.endswith(
        ", <mailto:unsubscribe@gardens.test?subject=unsubscribe>"
    )
    assert parsed["Date"].datetime == NOW


def test_personalising_only_fills_slots_the_rest_is_shared():
    rendered = render_one()
    a_html, _, _ = personalise(rendered, ENVELOPE, ANN, SIGNER)
    b_html, _, _ = personalise(
        rendered, ENVELOPE, Recipient("K-bob", "bob@example.com", "Bob"), SIGNER
    )
    assert a_html != b_html
    shared = "".join(rendered.html.chunks)
    assert len(shared) > 0.8 * len(a_html)  # most of the message is the shared render


def test_a_warning_over_100_kb():
    big = Piece(
        3, 1, "Long", "markdown", "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(600))
    )
    assert any("Gmail clips" in w for w in render_one(big).warnings)
    assert not any("Gmail clips" in w for w in render_one().warnings)


def caniemail_features(rendered):
    return features_used(rendered.html.fill({s: "https://x.test/" for s in rendered.html.slots}))


# The <body> element itself: Yahoo's apps replace it with a div. Every HTML email has one;
# the template puts nothing on it that matters (the frame table carries the background).
# The <style> block only holds progressive enhancements (narrow-screen padding, dark mode):
# the layout is fluid without it, so a client that drops it still shows a readable email.
UNAVOIDABLE = {"html-body", "html-doctype", "html-style"}


@pytest.mark.parametrize(
    "piece",
    [
        MARKDOWN,
        Piece(
            4, 1, "HTML", "html", '<p>Hi <a href="https://e.test/">there</a></p><ul><li>x</li></ul>'
        ),
    ],
)
def test_no_feature_the_major_clients_drop(piece):
    """caniemail.com's data (snapshot of npm caniemail): Gmail, Apple Mail, Outlook.com, Yahoo."""
    used = caniemail_features(render_one(piece)) - UNAVOIDABLE
    assert len(used) > 10  # the check sees the template's features (tables, padding, colours…)
    assert unsupported(used, *MUST_WORK) == []


def test_the_compatibility_check_catches_a_feature_a_client_drops():
    bad = Piece(5, 1, "Rounded", "html", '<div style="border-radius:4px">a</div>')
    used = caniemail_features(render_one(bad))
    assert "css-border-radius" in used
    assert any("outlook.windows" in f for f in unsupported(used, "outlook.windows"))
    assert any("Outlook for Windows" in w for w in render_one(bad).warnings)


def test_the_snapshot_says_where_it_comes_from():
    data = render.caniemail()
    assert data["source"].startswith("npm caniemail ") and len(data["features"]) > 250
