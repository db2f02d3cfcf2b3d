"""The control socket against abuse, and the channel document over it."""

import json
import socket
import threading

import pytest

from kuloo_daemon.control.client import ControlError
from kuloo_daemon.control.protocol import Reply

TOKEN = "f3a9" * 16  # 64 characters, Sell-token shaped


def test_a_thousand_bad_lines_each_get_an_error_while_another_client_is_served(daemon):
    bad_lines = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            bad_lines.append(b"{not json\n")
        elif kind == 1:
            bad_lines.append(b"x" * 70_000 + b"\n")  # over the 64 KiB limit
        elif kind == 2:
            bad_lines.append(
                json.dumps({"type": "request", "id": i, "method": "no.such"}).encode() + b"\n"
            )
        elif kind == 3:
            bad_lines.append(
                json.dumps(
                    {"type": "request", "id": i, "method": "channels.get", "params": {"id": "one"}}
                ).encode()
                + b"\n"
            )
        else:
            bad_lines.append(b"[1, 2, 3]\n")
    expected = {
        0: "parse_error",
        1: "line_too_long",
        2: "unknown_method",
        3: "invalid_params",
        4: "invalid_request",
    }

    abuser = socket.socket(socket.AF_UNIX)
    abuser.connect(daemon.socket_path)
    replies = abuser.makefile("rb")
    abuser.sendall(b'{"type":"request","id":0,"method":"hello","params":{"version":1}}\n')
    assert json.loads(replies.readline())["type"] == "reply"
    codes = []
    served_meanwhile = []

    def other_client():
        with daemon.client() as c:
            for _ in range(20):
                served_meanwhile.append(c.call("status")["pid"])

    sender = threading.Thread(target=lambda: [abuser.sendall(line) for line in bad_lines])
    sender.start()
    other = threading.Thread(target=other_client)
    other.start()
    for _ in range(1000):
        reply = json.loads(replies.readline())
        assert reply["type"] == "error"
        codes.append(reply["error"]["code"])
    sender.join()
    other.join()
    assert codes == [expected[i % 5] for i in range(1000)]
    assert served_meanwhile == [daemon.proc.pid] * 20
    # the abused connection itself still works
    abuser.sendall(b'{"type":"request","id":"last","method":"status"}\n')
    assert json.loads(replies.readline())["result"]["pid"] == daemon.proc.pid
    abuser.close()
    assert daemon.proc.poll() is None


def test_hello_is_required_first_and_versions_are_checked(daemon):
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket_path)
    f = s.makefile("rwb")
    f.write(
        b'{"type":"request","id":1,"method":"status"}\n{"type":"request","id":2,"method":"hello","params":{"version":99}}\n'
        b'{"type":"request","id":3,"method":"hello","params":{"version":1},"extra":"ignored"}\n'
        b'{"type":"request","id":4,"method":"status","future_field":true}\n'
    )
    f.flush()
    replies = [json.loads(f.readline()) for _ in range(4)]
    assert (
        replies[0]["type"] == "error"
        and replies[0]["error"]["code"] == "hello_required"
        and replies[0]["id"] == 1
    )
    assert replies[1]["error"]["code"] == "unsupported_version" and replies[1]["error"][
        "details"
    ] == {"supported": [1]}
    assert replies[2]["type"] == "reply" and replies[2]["result"]["version"] == 1
    assert replies[3]["type"] == "reply" and replies[3]["id"] == 4
    s.close()


def test_channel_document_round_trip_and_events(daemon):
    with daemon.client() as admin, daemon.client() as watcher:
        watcher.call("subscribe")
        doc = admin.call(
            "channels.create", {"name": "Acme news", "sequential_tags": ["welcome", "onboarding"]}
        )
        assert (
            doc["plan"] == "free"
            and doc["api_token"] == ""
            and doc["connection"]["status"] == "none"
        )
        updated = admin.call(
            "channels.update",
            {
                "id": doc["id"],
                "plan": "pro",
                "api_token": TOKEN,
                "sender": "Acme <news@acme.test>",
                "add_all_users_to_crm": True,
            },
        )
        assert updated["plan"] == "pro" and updated["add_all_users_to_crm"] is True
        assert updated["api_token"] == "****" + TOKEN[-4:]
        assert updated["connection"]["status"] == "unverified"
        assert TOKEN not in json.dumps(admin.call("channels.get", {"id": doc["id"]}))
        assert TOKEN not in json.dumps(admin.call("channels.list"))
        assert admin.call("channels.get", {"name": "Acme news"})["id"] == doc["id"]
        removed = admin.call("channels.update", {"id": doc["id"], "api_token": None})
        assert removed["api_token"] == "" and removed["connection"]["status"] == "none"

        events = []
        while len(events) < 3:
            m = watcher.read_message()
            if not isinstance(m, Reply):
                events.append(m)
        assert [e.event for e in events] == ["channel.updated"] * 3
        assert events[1].data["plan"] == "pro"


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"name": "x", "plan": "gold"}, "'plan' must be one of free, starter, pro, enterprise"),
        ({"name": "x", "sequential_tags": ["a", "a", " b"]}, "more than once"),
        ({"name": "x", "sender": "not an address"}, "'sender' must be an email address"),
        (
            {"name": "x", "api_token": "has spaces in it but is long enough to pass"},
            "does not look like",
        ),
        ({"name": "x", "api_token": "t0k3n" * 7 + "\u00e9"}, "20 to 512 printable ASCII"),
        ({"name": "x", "add_all_users_to_crm": "yes"}, "must be true or false"),
    ],
)
def test_bad_channel_input_gets_a_clear_error(daemon, params, fragment):
    with daemon.client() as c:
        with pytest.raises(ControlError) as err:
            c.call("channels.create", params)
        assert err.value.code == "invalid_params"
        assert fragment in err.value.message
        assert c.call("channels.list") == {"channels": []}


def test_conflicts_and_missing_channels(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "one"})
        with pytest.raises(ControlError) as err:
            c.call("channels.create", {"name": "one"})
        assert err.value.code == "conflict"
        with pytest.raises(ControlError) as err:
            c.call("channels.update", {"id": 999, "plan": "pro"})
        assert err.value.code == "not_found"


def test_token_never_reaches_the_log(daemon):
    with daemon.client() as c:
        doc = c.call("channels.create", {"name": "secretive"})
        c.call("channels.update", {"id": doc["id"], "api_token": TOKEN})
        # a malformed token is a secret too: it must not be echoed in the error or the log
        bad = "Zq" * 20 + " " + "9" * 30
        with pytest.raises(ControlError) as err:
            c.call("channels.update", {"id": doc["id"], "api_token": bad})
        assert bad not in str(err.value)
    log = daemon.log()
    assert '"channel updated"' in log and "api_token" in log  # the change itself is logged
    assert TOKEN not in log and TOKEN[:32] not in log
    assert bad not in log
