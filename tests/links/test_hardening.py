"""Security, second round, at the links service: what an outsider can make it do.

The Host header never shapes an answer; HSTS behind an https ``public_url``; the
per-token change limit; signup emails carry nothing the requester typed; a
confirmation link works once.
"""

from __future__ import annotations

import httpx
import pytest

from kuloo_daemon.links.pages import SECURITY_HEADERS

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
HSTS = "max-age=31536000"


# ----------------------------------------------------------------------------- Host header


@pytest.mark.parametrize("path", ["/healthz/", "/u/abc/", "/signup/1/", "/r/x/", "//evil.example/x"])
async def test_no_answer_is_built_from_the_host_header(links_env, path):
    async with links_env() as links:
        r = await links.http.get(path, headers={"host": "evil.example"})
        assert r.status_code in (400, 404, 405), r.status_code
        assert "location" not in r.headers
        assert "evil.example" not in r.text
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items())


# ----------------------------------------------------------------------------- HSTS


async def test_every_answer_carries_hsts_when_public_url_is_https(links_env):
    extra = {"public_url": "https://links.gardens.test", "rate_per_minute": 1, "rate_burst": 4}
    async with links_env(links=extra) as links:
        user = await links.user(await links.channel())
        answers = [
            await links.http.get("/healthz"),
            await links.http.get("/nope"),
            await links.http.post(f"/u/{links.token(user)}", data=ONE_CLICK),
            await links.http.get(f"/u/{links.token(user)[:-3]}xyz"),
            await links.http.get("/healthz"),  # past the burst: 429
        ]
        assert [r.status_code for r in answers] == [200, 404, 200, 400, 429]
        for r in answers:
            assert r.headers.get("strict-transport-security") == HSTS, r.status_code
        async with httpx.AsyncClient(base_url=links.url) as fresh:  # 431 from the edge
            r = await fresh.get("/healthz", headers={"x-big": "y" * 9000})
        assert r.status_code == 431 and r.headers.get("strict-transport-security") == HSTS


async def test_no_hsts_when_public_url_is_plain_http_or_empty(links_env):
    for public_url in ("", "http://127.0.0.1:1"):
        async with links_env(links={"public_url": public_url}) as links:
            r = await links.http.get("/healthz")
            assert r.status_code == 200 and "strict-transport-security" not in r.headers
