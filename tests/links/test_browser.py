"""The footer page in a real browser: Debian's chromium driven by Playwright (from pip, no
browser download). Opens the page, clicks "Weekly", then "Unsubscribe", and the user's
profile (users.get) shows each change. Skips — with the reason printed — only when the
browser or Playwright cannot be had (.ci/run installs both)."""

from __future__ import annotations

import os
import sys

import pytest

from kuloo_daemon.tokens import Claim, Purpose, Signer

from .conftest import KEY
from .test_daemon import links_daemon  # noqa: F401 - the daemon fixture

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


def test_footer_page_in_a_real_browser(links_daemon):  # noqa: F811
    sync_playwright = _browser_or_skip()
    d = links_daemon().start()
    d.wait_for("READY=1")
    with d.client() as c:
        url = c.call("status")["links"]["url"]
        channel = c.call("channels.create", {"name": "Kuloo Gardens"})["id"]
        user = c.call(
            "users.add", {"channel": channel, "email": "ada@example.com", "frequency": "monthly"}
        )
    token = Signer([KEY.encode()]).sign(Claim(Purpose.UNSUBSCRIBE, channel, user["kuloo_id"]))

    def profile() -> dict:
        with d.client() as c:
            return c.call("users.get", {"id": user["id"]})

    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - a browser that will not start here is a skip, said aloud
            print(f"browser test skipped: chromium did not start ({exc})", file=sys.stderr)
            pytest.skip(f"chromium did not start: {exc}")
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/u/{token}")
            assert "Kuloo Gardens" in page.title()
            assert "a monthly digest" in page.inner_text("main")
            page.get_by_role("button", name="Weekly").click()
            page.wait_for_selector("text=Saved: a weekly digest.")
            assert (profile()["frequency"], profile()["unsubscribed"]) == ("weekly", False)
            page.get_by_role("button", name="Unsubscribe from all emails").click()
            page.wait_for_selector("text=You are unsubscribed")
            assert profile()["unsubscribed"] is True
            assert page.get_by_role("button", name="Resubscribe").is_visible()
            assert errors == []  # no CSP violation or other console error
        finally:
            browser.close()
