"""The daemon as a subprocess: READY=1 after the links listener, status reports it, a one-click
POST over HTTP changes the user seen through users.get, and no token reaches the logs."""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from kuloo_daemon.tokens import Claim, Purpose, Signer

from .conftest import KEY


@pytest.fixture
def links_daemon(daemon_factory, short_tmp):
    def make(links: str = '[links]\nlisten = "127.0.0.1:0"\n'):
        creds = Path(short_tmp) / "creds"
        creds.mkdir(exist_ok=True)
        (creds / "link-signing-key").write_text(KEY + "\n")
        return daemon_factory(
            f'[credentials]\ndirectory = "{creds}"\n'
            f'[clock]\nmode = "manual"\nstart = "2026-01-05T09:00:00Z"\n{links}'
        )

    return make


def test_status_reports_the_bound_address_and_one_click_works_end_to_end(links_daemon):
    d = links_daemon().start()
    d.wait_for("READY=1")
    with d.client() as c:
        url = c.call("status")["links"]["url"]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        channel = c.call(
            "channels.create", {"name": "Gardens", "sender": "Gardens <news@gardens.test>"}
        )["id"]
        user = c.call("users.add", {"channel": channel, "email": "ada@example.com"})
    token = Signer([KEY.encode()]).sign(Claim(Purpose.UNSUBSCRIBE, channel, user["kuloo_id"]))
    click = Signer([KEY.encode()]).sign(
        Claim(Purpose.CLICK, channel, user["kuloo_id"], "https://gardens.test/a")
    )
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/healthz").text == "ok\n"
        page = http.get(f"/u/{token}")
        assert page.status_code == 200 and "Gardens" in page.text
        with d.client() as c:
            assert c.call("users.get", {"id": user["id"]}) == user  # the GET changed nothing
        r = http.post(
            f"/u/{token}",
            data={"List-Unsubscribe": "One-Click"},
            headers={"x-forwarded-for": "203.0.113.9"},
        )
        assert r.status_code == 200
        assert http.get(f"/r/{click}").headers["location"] == "https://gardens.test/a"
    with d.client() as c:
        after = c.call("users.get", {"id": user["id"]})
        audit = c.call("users.audit", {"id": user["id"]})["entries"]
        now = c.call("status")["clock"]["now"]
    assert after["unsubscribed"] is True and after["last_active"] == now
    assert [(e["field"], e["actor"]) for e in audit if e["field"]] == [("unsubscribed", "link")]
    assert d.stop() == 0
    log = d.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "links request"]
    assert {(r["route"], r["status"]) for r in requests} >= {
        ("/u/…", 200),
        ("/r/…", 302),
        ("/healthz", 200),
    }
    for secret in (token, click, token.split(".")[1], click.split(".")[1], KEY):
        assert secret not in log


def test_emails_link_to_the_bound_address_when_public_url_is_empty(links_daemon, short_tmp):
    """app binds the links listener before it builds delivery and hands it the address: with
    port 0 and no public_url, a signup confirmation (over Maildir) links to the real port."""
    maildir = Path(short_tmp) / "mail"
    d = links_daemon(
        '[links]\nlisten = "127.0.0.1:0"\n'
        f'[delivery]\ntransport = "maildir"\nmaildir = "{maildir}"\n'
    ).start()
    d.wait_for("READY=1")
    with d.client() as c:
        url = c.call("status")["links"]["url"]
        channel = c.call(
            "channels.create", {"name": "Gardens", "sender": "Gardens <news@gardens.test>"}
        )["id"]
    r = httpx.post(f"{url}/signup/{channel}", data={"email": "nia@example.com"}, timeout=10)
    assert r.status_code == 202
    deadline = time.monotonic() + 30  # the guard only ends a hang: the mail leaves at once
    while not (maildir / "new").is_dir() or not any((maildir / "new").iterdir()):
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    (path,) = (maildir / "new").iterdir()
    body = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(
        ("plain",)
    )
    assert f"{url}/c/" in body.get_content()
    assert d.stop() == 0


def test_a_taken_port_is_one_clear_error(links_daemon):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = links_daemon(f'[links]\nlisten = "127.0.0.1:{port}"\n')
        d.start()
        assert d.proc.wait(30) == 1
        assert f"links.listen: cannot listen on 127.0.0.1:{port}" in d.log()
        assert "Traceback" not in d.log()


def test_bad_links_keys_are_listed_by_check_config(links_daemon, venv_bin):
    import subprocess
    import sys

    d = links_daemon(
        '[links]\nlisten = "nowhere"\nallowed_origins = ["https://ok.test", "evil.test/x"]\n'
        'trusted_proxies = ["10.0.0.0/8", "not-an-ip"]\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "check-config", "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert r.returncode != 0
    for needle in ("links.listen", "'evil.test/x'", "'not-an-ip'"):
        assert needle in r.stdout + r.stderr
