"""The responsive template, the article sanitiser (nh3), the preheader and the subjects
(docs/delivery.md, "Rendering once, personalising cheaply")."""

from __future__ import annotations

import lxml.html
import pytest

from kuloo_daemon.delivery.render import Piece, render_email, sanitise


def html_of(*pieces: Piece) -> str:
    r = render_email(list(pieces), channel="Demo channel", postal_address="1 Road")
    return r.html.fill({s: f"https://l.test/{s}" for s in r.html.slots})


def footer(doc) -> lxml.html.HtmlElement:
    (td,) = doc.xpath("//td[@class='footer']")
    return td


HOSTILE = """<style>p { color: red !important; font-size: 40px }</style>
<p onclick="steal()" onmouseover="x()" style="color: #123456; width: 900px; position: fixed; float: left">Hi</p>
<a href="javascript:alert(1)">js</a> <a href="data:text/html;base64,PHNjcmlwdD4=">data</a>
<a href="https://ok.test/">ok</a> <script>alert(1)</script><iframe src="https://x.test"></iframe>
<img src="https://x.test/a.png" width="100%" height="auto"><img src="https://x.test/b.png" alt="B" width="200">
<table><tr><td>a</td><td>b</td></tr></table>"""


def test_article_html_is_sanitised_and_cannot_restyle_the_footer():
    piece = Piece(1, 1, "Hostile", "html", HOSTILE)
    r = render_email([piece], channel="Demo channel", postal_address="1 Road")
    out = html_of(piece)
    doc = lxml.html.document_fromstring(out)
    for bad in (
        "steal()",
        "onmouseover",
        "javascript:",
        "data:text/html",
        "<script",
        "<iframe",
        "position",
        "float",
        "900px",
        "40px",
    ):
        assert bad not in out, bad
    assert any("<style> was dropped" in w for w in r.warnings)
    assert doc.xpath("//p[normalize-space()='Hi']/@style") == ["color:#123456"]
    # The footer keeps the template's own colours.
    for p in footer(doc).iter("p", "a"):
        assert "red" not in (p.get("style") or "")
    # Images: integer width within the sheet, alt always present, fluid.
    imgs = doc.xpath("//td[@class='content']//img")
    assert [(i.get("width"), i.get("alt"), i.get("height")) for i in imgs] == [
        ("552", "", None),
        ("200", "B", None),
    ]
    assert all("max-width:100%" in i.get("style").replace(" ", "") for i in imgs)
    # A table sits in a scrolling wrapper, never widening the page.
    (table,) = doc.xpath("//td[@class='content']//table")
    wrapper = table.getparent()
    assert wrapper.tag == "div" and "overflow-x:auto" in wrapper.get("style").replace(" ", "")
    assert doc.xpath("//a[normalize-space()='ok']/@href") == ["https://l.test/link0"]


def test_the_template_is_fluid_and_declares_both_colour_schemes():
    doc = lxml.html.document_fromstring(html_of(Piece(1, 1, "T", "markdown", "Hello.")))
    (sheet,) = doc.xpath("//table[@class='sheet']")
    style = sheet.get("style").replace(" ", "")
    assert "width:100%" in style and "max-width:600px" in style and sheet.get("width") is None
    assert "margin:0" in doc.xpath("//body/@style")[0].replace(" ", "")
    metas = {m.get("name"): m.get("content") for m in doc.xpath("//meta[@name]")}
    assert (
        metas["color-scheme"] == "light dark" and metas["supported-color-schemes"] == "light dark"
    )
    assert "prefers-color-scheme: dark" in doc.xpath("//style")[0].text


@pytest.mark.parametrize(
    "piece, preheader",
    [
        (
            Piece(1, 1, "Frost", "markdown", "Frost comes early this year. Cover the beds now."),
            "Frost comes early this year.",
        ),
        (
            Piece(1, 1, "Frost", "markdown", "Body text.", summary="What to cover, and when."),
            "What to cover, and when.",
        ),
        (Piece(1, 1, "Long", "markdown", "word " * 80), None),
    ],
)
def test_the_preheader_is_the_summary_or_the_first_sentence(piece, preheader):
    r = render_email([piece], channel="Demo channel", postal_address="1 Road")
    if preheader is None:
        assert len(r.preheader) <= 140 and r.preheader.endswith("…")
    else:
        assert r.preheader == preheader
    doc = lxml.html.document_fromstring(html_of(piece))
    (hidden,) = doc.xpath("//div[@class='preheader']")
    assert hidden.text_content() == r.preheader
    assert "display:none" in hidden.get("style").replace(" ", "")
    assert hidden.getparent().tag == "body" and hidden.getprevious() is None  # first in the body
    assert (
        r.preheader not in r.text.fill({s: "x" for s in r.text.slots})[:200]
        or r.preheader in piece.body
    )  # not duplicated ahead of the text part


def test_a_digest_subject_names_its_first_article():
    pieces = [
        Piece(i, 1, t, "markdown", "x") for i, t in enumerate(["Frost is coming", "Seeds", "Bees"])
    ]
    r = render_email(pieces, channel="Demo channel", postal_address="1 Road")
    assert r.subject == "Frost is coming — and 2 more from Demo channel"
    assert (
        render_email(pieces[:2], channel="D", postal_address="").subject
        == "Frost is coming — and 1 more from D"
    )
    assert render_email(pieces[:1], channel="D", postal_address="").subject == "Frost is coming"


def test_a_digest_can_carry_the_rest_as_titles():
    pieces = [
        Piece(1, 1, "Frost is coming", "markdown", "Cover **beds**."),
        Piece(2, 1, "Seeds", "markdown", "Sow them."),
        Piece(3, 1, "Compost", "clip", "<p>Turn it.</p>", url="https://c.test/compost"),
    ]
    r = render_email(pieces, channel="D", postal_address="", full=1)
    text = r.text.fill({s: f"<{s}>" for s in r.text.slots})
    assert "Cover beds." in text and "Sow them." not in text and "Turn it." not in text
    assert "Also new" in text and "Seeds" in text and "Compost" in text
    assert r.links[-1] == "https://c.test/compost" and r.full == 1


def test_sanitise_keeps_ordinary_markup():
    out, warnings = sanitise(
        "<h2>T</h2><p><strong>b</strong> <em>i</em> <code>c</code></p>"
        '<ul><li>x</li></ul><a href="mailto:a@b.test">m</a>'
    )
    assert warnings == []
    assert out == (
        "<h2>T</h2><p><strong>b</strong> <em>i</em> <code>c</code></p>"
        '<ul><li>x</li></ul><a href="mailto:a@b.test">m</a>'
    )


def test_the_summary_front_matter_key_is_the_preheader_and_part_of_the_content_hash():
    from kuloo_daemon.delivery import documents

    head = "---\ntitle: Frost\npublished_at: 2026-01-05\n"
    plain = documents.parse("a.md", head + "---\nCover the beds. Now.\n")
    summed = documents.parse(
        "a.md", head + "summary: What to cover, and when.\n---\nCover the beds. Now.\n"
    )
    other = documents.parse("a.md", head + "summary: Something else.\n---\nCover the beds. Now.\n")
    assert plain.summary == "" and summed.summary == "What to cover, and when."
    assert len({plain.content_hash, summed.content_hash, other.content_hash}) == 3
    assert "'summary' must be a string" in documents.parse("a.md", head + "summary: [1]\n---\nx\n")
    r = render_email(
        [Piece(1, 1, summed.title, "markdown", summed.body, summary=summed.summary)],
        channel="D",
        postal_address="",
    )
    assert r.preheader == "What to cover, and when."
