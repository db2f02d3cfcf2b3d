"""A Sell (or a proxy in front of it) that echoes the Authorization header back, cut short.

A small stand-in Sell server on loopback answers ``/v2/users/self`` with the token, or
pieces of it, in an HTML error page, in a 422's message/details/field/logref, in an
``X-Request-Id`` and in a 2xx body that is not JSON. The daemon runs as a subprocess;
neither the ``channels.update``/``channels.verify`` replies, nor the broadcast events, nor
the log may contain any 8-character run of the token.
"""

import json
import secrets
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

TOKEN = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(64))


def _answers(auth: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    tok = auth.removeprefix("Bearer ")
    return {
        "html": (
            400,
            {"Content-Type": "text/html", "X-Request-Id": tok[3:40]},
            f"<html><body><h1>400 Bad Request</h1><p>Request header was: Authorization: {auth[:64]}"
            f"</p></body></html>".encode(),
        ),
        "422": (
            422,
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "errors": [
                        {
                            "error": {
                                "code": "invalid",
                                "message": f"header {tok[10:50]} refused",
                                "details": f"token starting {tok[:30]} is odd",
                                "field": f"/data/{tok[5:20]}",
                                "resource": tok[40:60],
                            }
                        }
                    ],
                    "meta": {"logref": tok[20:60]},
                }
            ).encode(),
        ),
        "malformed": (
            200,
            {"Content-Type": "text/plain", "X-Request-Id": tok[2:34]},
            f"you sent {tok[:50]}".encode(),
        ),
    }


class EchoSell(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str) -> None:
        self.mode = mode

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                status, headers, body = _answers(handler.headers.get("Authorization", ""))[
                    self.mode
                ]
                handler.send_response(status)
                for k, v in headers.items():
                    handler.send_header(k, v)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture(params=["html", "422", "malformed"])
def echo_sell(request):
    server = EchoSell(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _runs(text: str) -> list[str]:
    return [TOKEN[i : i + 8] for i in range(len(TOKEN) - 7) if TOKEN[i : i + 8] in text]


def test_an_echoed_token_never_leaves_the_daemon(daemon_factory, echo_sell):
    d = daemon_factory(sell=f'base_url = "{echo_sell}"\nmax_attempts = 1\n')
    d.start()
    d.wait_for("READY=1")
    with d.client() as c:
        c.call("subscribe")
        channel = c.call("channels.create", {"name": "Acme"})
        replies = [
            c.call("channels.update", {"id": channel["id"], "api_token": TOKEN}),
            c.call("channels.verify", {"id": channel["id"]}),
        ]
        while sum(e.event == "channel.updated" for e in c.events) < 3:
            message = c.read_message()
            if getattr(message, "event", None):
                c.events.append(message)
        events = [e.data for e in c.events if e.event == "channel.updated"]
    problems = replies[-1]["connection"]["problems"]
    assert replies[-1]["connection"]["status"] == "failed" and len(problems) == 1
    assert "Zendesk Sell answered unexpectedly" in problems[0]
    assert "****" in problems[0] or "Bearer ****" in problems[0], (
        problems
    )  # the server's text is kept, masked
    assert _runs(json.dumps(replies)) == []
    assert _runs(json.dumps(events)) == []
    assert d.stop() == 0
    assert _runs(d.log()) == []
