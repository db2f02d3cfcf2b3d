"""Every kind of email in a real browser at phone and desktop widths (docs/delivery.md,
"Rendering once, personalising cheaply"): nothing scrolls sideways and the Unsubscribe link
(the confirmation's button) lies inside the viewport. Debian's chromium driven by Playwright,
as in tests/links/test_browser.py; skips, saying why, only without them."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from kuloo_daemon.delivery.message import Envelope, Recipient, personalise
from kuloo_daemon.delivery.render import Piece, render_email
from kuloo_daemon.links.server import confirmation_texts
from kuloo_daemon.tokens import Signer

CHROMIUM = "/usr/bin/chromium"


def _browser_or_skip():
    reason = None
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as exc:
            reason = f"Playwright is not installed ({exc}); it is in the test extra"
    if reason:
        print(f"browser test skipped: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return sync_playwright


NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
SIGNER = Signer([b"browser-test-key-0123456789"])
ENVELOPE = Envelope(
    3,
    "Kuloo Gardens",
    "Kuloo Gardens <news@gardens.test>",
    "https://links.kuloo-gardens.example.com",
)
RECIPIENT = Recipient("K" * 36, "ada@example.com", "Adaeze-Marguerite", "Okonkwo")
WIDTHS = (320, 375, 414, 600)
IMAGE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="400">'
    '<rect width="1200" height="400" fill="#4a7"/></svg>'
)

MARKDOWN = """Frost is coming early this year: cover the beds tonight.

| Bed | Crop | Sown | Harvest | Water | Notes on the variety and where it came from |
|-----|------|------|---------|-------|---------------------------------------------|
| 1 | Leeks 'Musselburgh' | March | December | weekly | from the allotment society's seed swap, 2024 |

```
for bed in beds: cover(bed, fleece="double", pegs=12, check_every_hours=6, note="frost")
```

![Beds under fleece](https://img.kuloo.test/beds.svg)

A_very_long_word_without_any_space_that_would_push_the_page_wider_than_a_phone_screen_ever_is.
"""
HTML_WITH_STYLE = (
    """<html><head><style>p { font-size: 40px; width: 900px; } a { color: red; }
</style></head><body><p style="width: 900px">Big text that wants to be wide.</p>
<img src="https://img.kuloo.test/beds.svg"><table><tr>"""
    + "".join(f"<td>column {i} with some text</td>" for i in range(12))
    + "</tr></table></body></html>"
)
CLIP = (
    "<article><h2>Composting in winter</h2><p>Turn the heap once a month.</p>"
    '<img src="https://img.kuloo.test/beds.svg" width="1200"></article>'
)


def documents() -> dict[str, str]:
    def email(pieces: list[Piece], **kw) -> str:
        rendered = render_email(
            pieces,
            channel=ENVELOPE.channel_name,
            postal_address="Kuloo Gardens Ltd\n1 Allotment Road\nLeeds LS1 1AA",
            **kw,
        )
        return personalise(rendered, ENVELOPE, RECIPIENT, SIGNER)[0]

    md = Piece(1, 1, "Frost is coming", "markdown", MARKDOWN)
    styled = Piece(2, 1, "An HTML article with its own style", "html", HTML_WITH_STYLE)
    clip = Piece(3, 1, "Composting", "clip", CLIP, url="https://news.test/compost")
    channel = SimpleNamespace(id=3, name=ENVELOPE.channel_name, sender=ENVELOPE.sender)
    return {
        "sequence-markdown": email([md]),
        "sequence-html-style": email([styled]),
        "sequence-clip": email([clip]),
        "digest": email([md, styled, clip]),
        "digest-oversized": email([md, styled, clip], full=1),
        "confirmation": confirmation_texts(
            channel, "https://links.kuloo-gardens.example.com/c/" + "x" * 300
        )[1],
    }


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - a browser that will not start here is a skip
            print(f"browser test skipped: chromium did not start ({exc})", file=sys.stderr)
            pytest.skip(f"chromium did not start: {exc}")
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("kind", list(documents()))
def test_every_kind_fits_every_width(browser, kind):
    document = documents()[kind]
    page = browser.new_page()
    try:
        page.route("**/*", lambda route: route.fulfill(body=IMAGE, content_type="image/svg+xml"))
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            page.set_content(document, wait_until="load")
            scroll, inner = page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert scroll <= inner, (kind, width, scroll)
            name = "Confirm my subscription" if kind == "confirmation" else "Unsubscribe"
            link = page.get_by_role("link", name=name, exact=True)
            box = link.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= inner, (
                kind,
                width,
                box,
            )
            assert link.is_visible()
            if kind != "confirmation":
                # Images shrink with the sheet; the article's style never reaches the footer.
                for img in page.query_selector_all("td.content img"):
                    b = img.bounding_box()
                    assert b is not None and b["x"] + b["width"] <= inner, (kind, width, b)
                size = page.evaluate(
                    "getComputedStyle(document.querySelector('td.footer p')).fontSize"
                )
                assert size == "12px", (kind, size)
    finally:
        page.close()
