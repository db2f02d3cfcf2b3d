"""Transport and envelope: tokens, strictness switches, X-Request-Id, keep-alive, bad bodies."""

from __future__ import annotations

import socket

import httpx
from sellsim_checks import assert_error

from sellsim.seeds import DEMO_TOKEN


def _raw(base_url: str, payload: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_missing_token_is_401_with_envelope(sim):
    r = httpx.get(sim.base_url + "/v2/users/self", headers={"User-Agent": "t"})
    body = assert_error(r, 401, "unauthorized")
    assert body["meta"]["http_status"] == "401 Unauthorized"


def test_invalid_token_is_401(sim):
    r = httpx.get(sim.base_url + "/v2/leads", headers={"Authorization": "Bearer " + "x" * 64})
    assert_error(r, 401, "unauthorized")


def test_lowercase_bearer_rejected_by_default_and_switchable(sim):
    h = {"Authorization": "bearer " + DEMO_TOKEN}
    assert_error(httpx.get(sim.base_url + "/v2/users/self", headers=h), 401, "unauthorized")
    sim.set_options(reject_lowercase_bearer=False)
    assert httpx.get(sim.base_url + "/v2/users/self", headers=h).status_code == 200


def test_missing_user_agent_rejected_by_default_and_switchable(sim, api):
    del api.headers["User-Agent"]
    assert_error(api.get("/v2/users/self"), 400, "invalid_user_agent")
    sim.set_options(require_user_agent=False)
    assert api.get("/v2/users/self").status_code == 200


def test_lowercase_method_gets_an_html_400(sim):
    raw = _raw(
        sim.base_url,
        b"get /v2/users/self HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n"
        b"Authorization: Bearer " + DEMO_TOKEN.encode() + b"\r\nConnection: close\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: text/html" in head.lower()
    assert b"x-request-id: " in head.lower()
    assert body.startswith(b"<html>")


def test_unsupported_accept_is_406(api):
    assert_error(api.get("/v2/users/self", headers={"Accept": "text/xml"}), 406, "not_acceptable")


def test_request_id_on_every_response(api, sim):
    seen = set()
    for r in (
        api.get("/v2/users/self"),
        api.get("/v2/nope"),
        api.delete(
            f"/v2/leads/{api.post('/v2/leads', json={'data': {'last_name': 'A'}}).json()['data']['id']}"
        ),
        httpx.get(sim.base_url + "/v2/users/self"),
    ):
        assert r.headers["x-request-id"]
        seen.add(r.headers["x-request-id"])
    assert len(seen) == 4


def test_unknown_path_is_404_envelope(api):
    body = assert_error(api.get("/v2/nothing/here"), 404, "not_found")
    assert body["errors"][0]["error"]["details"] == "Requested path was not found."


def test_bad_bodies_are_400_invalid_payload(api):
    r = api.post("/v2/leads", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_payload")
    assert_error(api.post("/v2/leads", json={"last_name": "X"}), 400, "invalid_payload")


def test_keep_alive_serves_several_requests_on_one_connection(sim):
    one = (
        b"GET /v2/users/self HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n"
        b"Authorization: Bearer " + DEMO_TOKEN.encode() + b"\r\n\r\n"
    )
    last = one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    raw = _raw(sim.base_url, one + one + last)
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert raw.count(b"connection: keep-alive") == 2


def test_single_record_envelope(api):
    r = api.get("/v2/users/self")
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert set(body) == {"data", "meta"}
    assert body["meta"] == {"type": "user"}


def test_bearer_token_must_be_exact(sim):
    for value in (
        f"Bearer  {DEMO_TOKEN}",
        f"Bearer {DEMO_TOKEN}x",
        f"Bearer {DEMO_TOKEN[:-1]}",
        f"Token {DEMO_TOKEN}",
        "Bearer",
    ):
        r = httpx.get(
            sim.base_url + "/v2/users/self", headers={"Authorization": value, "User-Agent": "t"}
        )
        assert_error(r, 401, "unauthorized")


def test_request_id_on_fault_and_limit_responses(api, sim):
    sim.set_faults(
        [{"kind": "html", "count": 1}, {"kind": "503", "count": 1}, {"kind": "429", "count": 1}]
    )
    html = api.get("/v2/leads")
    assert html.status_code == 503 and html.headers["x-request-id"]
    assert_error(api.get("/v2/leads"), 503, "temporarily_unavailable")  # logref == header
    limited = api.get("/v2/leads")
    assert_error(limited, 429, "rate_limit_exceeded")  # rate_limit_body="json" by default
    ok = api.get("/v2/leads")
    assert ok.status_code == 200 and ok.headers["x-request-id"]
    assert len({r.headers["x-request-id"] for r in (html, limited, ok)}) == 3


def test_every_answer_carries_date_from_the_simulated_clock(sim):
    """Planted bug: Date from the wall clock (a poller's boundary then misses /_sim/clock moves)."""
    from email.utils import parsedate_to_datetime

    def date_and_updated_at():
        with sim.client() as c:
            r = c.post("/v2/leads", json={"data": {"last_name": "Clock"}})
            created = r.json()["data"]["updated_at"]
            return parsedate_to_datetime(r.headers["date"]), created

    first, _ = date_and_updated_at()
    sim.advance_clock(86_400)
    later, updated_at = date_and_updated_at()
    assert (later - first).total_seconds() >= 86_400
    assert later.strftime("%Y-%m-%dT%H:%M:%SZ") >= updated_at  # one clock: never behind the records
    r = httpx.get(sim.base_url + "/v2/users/self", headers={"User-Agent": "t"})
    assert r.status_code == 401 and r.headers["date"]  # errors too
