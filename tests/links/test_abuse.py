"""Bad input at the edge: forged tokens, sizes, floods, proxies, failures — nothing changes, nothing leaks."""

from __future__ import annotations

import base64
import json
import os
import random
from datetime import UTC, datetime

import httpx
import pytest

from kuloo_daemon.links import limits
from kuloo_daemon.links.pages import SECURITY_HEADERS
from kuloo_daemon.store import users as user_store
from kuloo_daemon.tokens import BadToken, Claim, Purpose, Signer

from .conftest import KEY, OLD_KEY

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forgeries(genuine: str, kuloo_id: str, channel: int, n: int, seed: int = 12) -> list[str]:
    """Random tokens and mutations of a genuine one: flipped, cut, extended, re-signed claims."""
    rng = random.Random(seed)
    out: list[str] = []
    head, mac = genuine.split(".")
    while len(out) < n:
        kind = rng.randrange(7)
        if kind == 0:  # one character changed
            i = rng.randrange(len(genuine))
            c = rng.choice(ALPHABET.replace(genuine[i], ""))
            t = genuine[:i] + c + genuine[i + 1 :]
        elif kind == 1:  # cut short
            t = genuine[: rng.randrange(len(genuine))]
        elif kind == 2:  # extra characters
            t = genuine + "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 5)))
        elif kind == 3:  # another claim (other user, channel or purpose) under the genuine MAC
            claim = [
                rng.choice("urcx"),
                channel + rng.randrange(0, 3),
                rng.choice([kuloo_id, kuloo_id[::-1], "x"]),
                "",
                0,
            ]
            t = f"{b64(json.dumps(claim, separators=(',', ':')).encode())}.{mac}"
        elif kind == 4:  # signed with a key we do not hold
            key = bytes(rng.randrange(256) for _ in range(32))
            t = Signer([key]).sign(Claim(Purpose.UNSUBSCRIBE, channel, kuloo_id))
        elif kind == 5:  # random text
            t = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 120)))
        else:  # MAC truncated or padded
            t = (
                f"{head}.{mac[: rng.randrange(len(mac))]}"
                if rng.random() < 0.5
                else f"{head}.{mac}=="
            )
        if t != genuine:
            out.append(t)
    return out


def test_ten_thousand_forged_or_mutated_tokens_are_all_refused():
    signer = Signer([KEY.encode()])
    genuine = signer.sign(Claim(Purpose.UNSUBSCRIBE, 1, "a" * 32))
    now = datetime(2026, 1, 5, tzinfo=UTC)
    accepted = 0
    for token in forgeries(genuine, "a" * 32, 1, 10_000):
        try:
            signer.verify(token, now, Purpose.UNSUBSCRIBE)
        except BadToken:
            continue
        accepted += 1
    assert accepted == 0
    assert (
        signer.verify(genuine, now, Purpose.UNSUBSCRIBE).kuloo_id == "a" * 32
    )  # the check can pass


# make soak: 2,500 forgeries on each of 4 routes = 10,000 requests; make test: 150 x 4.
HTTP_FORGERIES = 2500 if os.environ.get("KULOO_SOAK") else 150


async def test_forged_tokens_over_http_change_nothing(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel())
        genuine = links.token(user)
        for token in forgeries(genuine, user.kuloo_id, user.channel_id, HTTP_FORGERIES, seed=3):
            for method, path in (
                ("POST", f"/u/{token}"),
                ("GET", f"/u/{token}"),
                ("GET", f"/r/{token}"),
                ("POST", f"/c/{token}"),
            ):
                r = await links.http.request(
                    method, path, data=ONE_CLICK if method == "POST" else None
                )
                assert r.status_code in (400, 404), (method, path, r.status_code)
                assert "Traceback" not in r.text and "BadToken" not in r.text
        assert (await links.get(user.id)) == user
        assert links.events == []


async def test_wrong_purpose_unknown_user_and_deleted_channel(links_env):
    async with links_env() as links:
        channel = await links.channel()
        user = await links.user(channel)
        click = links.token(user, Purpose.CLICK, "https://gardens.test/")
        r = await links.http.post(
            f"/u/{click}", data=ONE_CLICK
        )  # a click token is no unsubscribe token
        assert r.status_code == 400
        stranger = links.signer.sign(Claim(Purpose.UNSUBSCRIBE, channel, "no-such-kuloo-id"))
        for method in ("GET", "POST"):
            r = await links.http.request(
                method, f"/u/{stranger}", data=ONE_CLICK if method == "POST" else None
            )
            assert r.status_code == 404 and "Nothing was changed" in r.text
        other_channel = links.signer.sign(Claim(Purpose.UNSUBSCRIBE, channel + 1, user.kuloo_id))
        r = await links.http.post(f"/u/{other_channel}", data=ONE_CLICK)
        assert r.status_code == 404
        r = await links.http.get(
            f"/r/{links.signer.sign(Claim(Purpose.CLICK, channel, 'nobody', 'https://x.test/'))}"
        )
        assert r.status_code == 404 and "location" not in r.headers
        assert (await links.get(user.id)) == user


async def test_body_and_header_size_limits(links_env):
    async with links_env(links={"max_body_bytes": 1024, "max_header_bytes": 2048}) as links:
        user = await links.user(await links.channel())
        url = f"/u/{links.token(user)}"
        r = await links.http.post(
            url,
            content=b"List-Unsubscribe=One-Click&pad=" + b"x" * 5000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 413

        async def chunks():  # no Content-Length: the limit holds while streaming
            yield b"List-Unsubscribe=One-Click&pad="
            for _ in range(10):
                yield b"x" * 500

        r = await links.http.post(
            url, content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 413
        async with httpx.AsyncClient(base_url=links.url) as fresh:  # a new connection
            r = await fresh.get(url, headers={"x-big": "y" * 4096})
        assert r.status_code == 431
        assert (await links.get(user.id)) == user
        r = await links.http.post(url, data=ONE_CLICK)  # the service is still fine
        assert r.status_code == 200


async def test_rate_limit_throttles_every_route_but_never_a_post_with_a_valid_token(links_env):
    async with links_env(links={"rate_per_minute": 1, "rate_burst": 3}) as links:
        user = await links.user(await links.channel())
        token = links.token(user)
        codes = [(await links.http.get("/healthz")).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = await links.http.get(f"/u/{token}")
        assert r.status_code == 429 and r.headers["retry-after"] == "60"
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items())
        for path in (f"/r/{links.token(user, Purpose.CLICK, 'https://x.test/')}", "/signup/1"):
            assert (
                await links.http.request("POST" if "signup" in path else "GET", path)
            ).status_code == 429
        for _ in range(20):  # mailbox providers' one-click POSTs come from few addresses
            assert (await links.http.post(f"/u/{token}", data=ONE_CLICK)).status_code == 200
        r = await links.http.post(f"/u/{token[:-2]}xx", data=ONE_CLICK)  # a forged one is throttled
        assert r.status_code == 429
        assert (await links.get(user.id)).unsubscribed is True


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(links_env):
    async with links_env(links={"rate_per_minute": 1, "rate_burst": 2}) as links:
        # Not a trusted proxy: a client cannot pick a fresh address per request.
        codes = [
            (
                await links.http.get("/healthz", headers={"x-forwarded-for": f"203.0.113.{i}"})
            ).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 429, 429]
    async with links_env(
        links={"rate_per_minute": 1, "rate_burst": 2, "trusted_proxies": ["127.0.0.1/32"]}
    ) as links:
        codes = [
            (
                await links.http.get("/healthz", headers={"x-forwarded-for": f"203.0.113.{i}"})
            ).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 200, 200]
        same = [
            (
                await links.http.get("/healthz", headers={"x-forwarded-for": "198.51.100.7"})
            ).status_code
            for _ in range(3)
        ]
        assert same == [200, 200, 429]


def test_client_address_reads_forwarded_for_right_to_left_through_trusted_hops():
    trusted = limits.networks(["10.0.0.0/8", "127.0.0.1"])
    assert limits.client_address("127.0.0.1", ["1.2.3.4, 10.1.1.1"], trusted) == "1.2.3.4"
    assert (
        limits.client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4"], trusted) == "1.2.3.4"
    )  # left part forgeable
    assert limits.client_address("9.9.9.9", ["1.2.3.4"], trusted) == "9.9.9.9"  # untrusted peer
    assert limits.client_address("127.0.0.1", ["junk"], trusted) == "127.0.0.1"
    assert limits.client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert limits.client_address("127.0.0.1", ["[2001:db8::1]:443"], trusted) == "2001:db8::1"


def test_rate_limiter_refills_with_time():
    limiter = limits.RateLimiter(rate_per_minute=60, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0) is True  # per key
    assert limiter.allow("a", 1.0) is True and limiter.allow("a", 1.0) is False


async def test_an_unexpected_failure_is_a_plain_500_without_detail(links_env, monkeypatch):
    async def broken(*_args):
        raise RuntimeError("secret internal detail /var/lib/kuloo")

    monkeypatch.setattr(user_store, "subscriber", broken)
    async with links_env() as links:
        user = await links.user(await links.channel())
        r = await links.http.get(f"/u/{links.token(user)}")
        assert r.status_code == 500
        assert (
            "secret internal detail" not in r.text
            and "Traceback" not in r.text
            and "RuntimeError" not in r.text
        )
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items())
        assert (await links.http.get("/healthz")).status_code == 200  # the service goes on


async def test_a_rotated_key_still_verifies_old_links_and_signs_with_the_new(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel())
        old_token = Signer([OLD_KEY.encode()]).sign(
            Claim(Purpose.UNSUBSCRIBE, user.channel_id, user.kuloo_id)
        )
        assert (await links.http.get(f"/u/{old_token}")).status_code == 400  # not yet a known key
        (links.root / "creds" / "link-signing-key").write_text(f"{KEY}\n{OLD_KEY}\n")
        links.server.app.reload_keys()  # what SIGHUP does
        assert (await links.http.get(f"/u/{old_token}")).status_code == 200
        assert (await links.http.get(f"/u/{links.token(user)}")).status_code == 200


async def test_without_a_signing_key_links_answer_503_and_change_nothing(links_env):
    async with links_env() as links:
        user = await links.user(await links.channel())
        (links.root / "creds" / "link-signing-key").unlink()
        links.server.app.reload_keys()
        r = await links.http.post(f"/u/{links.token(user)}", data=ONE_CLICK)
        assert r.status_code == 503
        assert (await links.get(user.id)) == user


@pytest.mark.parametrize(
    "path",
    [
        "/u/",
        "/u/a/b",
        "/nope",
        "/r/",
        "/signup/x",
        "/signup/-1",
        "/signup/1.5",
        "/signup/99999999999999999999999",
        "/%00",
        "/u/%ff%fe",
    ],
)
async def test_unknown_and_malformed_paths_get_plain_answers(links_env, path):
    async with links_env() as links:
        r = await links.http.request("POST" if "signup" in path else "GET", path)
        assert r.status_code in (400, 404, 405)
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items())
