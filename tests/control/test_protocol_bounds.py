"""The control protocol at its edges: ids, params, server messages, hello, framing.

Written to kill the mutants `make mutate` found surviving in control/protocol.py; each
test names the planted bugs it was checked against. (The line-length boundary at the
socket level, issue 14 item 4, is tested with the server.)
"""

from __future__ import annotations

import json

import pytest

from kuloo_daemon.control import protocol as p


def _error(line) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as err:
        p.parse_request(line)
    return err.value


@pytest.mark.parametrize(
    ("rid", "ok"),
    [(0, True), (-5, True), ("a", True), ("x" * 100, True), ("x" * 101, False), ("", True),
     (2**63 - 1, True), (2**63, False), (-(2**63), True), (-(2**63) - 1, False),
     (True, False), (False, False), (1.5, False), (None, False), ([1], False), ("\ud800", False)],
)  # fmt: skip
def test_request_id_edges(rid, ok):
    """Planted bugs: ``< 100`` for ``<= 100`` (a 100-character id refused), ``<`` for
    ``<=`` at either end of the 64-bit range, booleans or floats accepted as ids, a
    lone surrogate accepted (it could not be echoed back as UTF-8)."""
    line = json.dumps({"id": rid, "method": "status"}).encode()
    if ok:
        assert p.parse_request(line) == p.Request(rid, "status", {})
    else:
        err = _error(line)
        assert (err.code, err.id) == ("invalid_request", None)
        assert err.message == "a request needs an id (a 64-bit integer or a short string)"


def test_invalid_requests_keep_their_id_and_say_why():
    """Planted bugs: the id dropped from the error (the client cannot match it), a
    default type other than "request", an empty method accepted, the messages changed."""
    err = _error(b'{"id":4,"type":"reply","method":"x"}')
    assert (err.code, err.id, err.message) == ("invalid_request", 4, "expected type 'request'")
    err = _error(b'{"id":"q","method":""}')
    assert (err.code, err.id, err.message) == ("invalid_request", "q", "a request needs a method name")
    err = _error(b'{"id":5,"method":7}')
    assert (err.code, err.id) == ("invalid_request", 5)
    err = _error(b'{"id":6,"method":"m","params":"x"}')
    assert (err.code, err.id, err.message) == ("invalid_params", 6, "params must be a JSON object")
    err = _error(b"[1]")
    assert (err.code, err.id, err.message) == ("invalid_request", None, "a request must be a JSON object")
    err = _error(b"\xff")
    assert err.code == "parse_error" and err.message.startswith("not valid JSON: ")
    assert err.__suppress_context__
    err = _error(p.TooLong(70000, 65536))
    assert (err.code, err.message) == ("line_too_long", "line of 70000 bytes dropped; the limit is 65536")


def test_requests_that_are_fine():
    """Planted bugs: an explicit ``"type": "request"`` refused, ``"params": null`` refused
    or kept as None, params dropped."""
    assert p.parse_request(b'{"type":"request","id":1,"method":"m","params":null}') == p.Request(1, "m", {})
    assert p.parse_request(b'{"id":1,"method":"m","params":{"a":[1]}}') == p.Request(1, "m", {"a": [1]})


def test_server_messages_on_the_client_side():
    """Planted bugs: a reply's id or result dropped, an error without a code not read as
    "internal", a non-dict error body crashing, an event's name or data dropped, an
    unknown kind accepted."""
    assert p.parse_message(b'{"type":"reply","id":9,"result":{"a":1}}') == p.Reply(9, {"a": 1})
    assert p.parse_message(b'{"type":"error","id":2}') == p.ErrorReply(2, "internal", "", None)
    assert p.parse_message(b'{"type":"error","id":2,"error":"boom"}') == p.ErrorReply(2, "internal", "", None)
    assert p.parse_message(b'{"type":"error","id":2,"error":{"code":"not_found","message":"m","details":[1]}}') == \
        p.ErrorReply(2, "not_found", "m", [1])  # fmt: skip
    assert p.parse_message(b'{"type":"event","event":"x.y","data":[1]}') == p.Event("x.y", [1])
    assert p.parse_message(b'{"type":"event"}') == p.Event("", None)
    for line, message in [(b'{"type":"request","id":1}', "unknown message type 'request'"),
                          (b"{}", "unknown message type None"),
                          (b"[]", "a server message must be a JSON object")]:  # fmt: skip
        with pytest.raises(p.ProtocolError) as err:
            p.parse_message(line)
        assert (err.value.code, err.value.message) == ("invalid_request", message)


def test_encoding_is_one_compact_utf8_line():
    """Planted bugs: spaces in the separators, ASCII escapes, a missing newline, details
    sent as null, another key name."""
    assert p.encode(p.Request(1, "m", {"a": "é"})) == '{"type":"request","id":1,"method":"m","params":{"a":"é"}}\n'.encode()
    assert p.encode(p.Reply("r", None)) == b'{"type":"reply","id":"r","result":null}\n'
    assert p.encode(p.ErrorReply(3, "conflict", "no")) == b'{"type":"error","id":3,"error":{"code":"conflict","message":"no"}}\n'
    assert p.encode(p.ErrorReply(3, "conflict", "no", {"k": 1})) == \
        b'{"type":"error","id":3,"error":{"code":"conflict","message":"no","details":{"k":1}}}\n'  # fmt: skip
    assert p.encode(p.Event("e")) == b'{"type":"event","event":"e","data":null}\n'
    from datetime import date

    assert p.encode(p.Reply(1, {"d": date(2026, 1, 2)})) == b'{"type":"reply","id":1,"result":{"d":"2026-01-02"}}\n'


def test_error_reply_prefers_the_errors_own_id():
    """Planted bugs: the fallback id always used, or never."""
    assert p.error_reply(p.ProtocolError("conflict", "m", 5), 9) == p.ErrorReply(5, "conflict", "m", None)
    assert p.error_reply(p.ProtocolError("conflict", "m", None, {"x": 1}), 9) == p.ErrorReply(9, "conflict", "m", {"x": 1})
    assert p.error_reply(p.ProtocolError("conflict", "m", 0), 9).id == 0  # 0 is an id
    with pytest.raises(AssertionError):
        p.ProtocolError("no_such_code", "m")


def test_hello_both_sides():
    """Planted bugs: a boolean or missing version accepted, the supported list missing
    from the refusal, the client's version and name not sent."""
    assert p.hello(3, "tui") == p.Request(3, "hello", {"version": p.PROTOCOL_VERSION, "client": "tui"})
    assert p.hello() == p.Request(0, "hello", {"version": 1, "client": "client"})
    assert p.check_hello({"version": 1}, 7) == 1
    for params in ({}, {"version": True}, {"version": "1"}, {"version": 1.0}):
        with pytest.raises(p.ProtocolError) as err:
            p.check_hello(params, 7)
        assert (err.value.code, err.value.id, err.value.message) == ("invalid_params", 7, "hello needs an integer 'version'")
    with pytest.raises(p.ProtocolError) as err:
        p.check_hello({"version": 2}, 8)
    assert (err.value.code, err.value.id, err.value.details) == ("unsupported_version", 8, {"supported": [1]})
    assert err.value.message == "protocol version 2 is not supported; this daemon speaks [1]"


def test_splitter_edges():
    """Planted bugs: a line of exactly the limit refused (``>=``), blank lines passed on,
    ``pending`` not counting a partial line or a discarded one, a long line's size
    miscounted across chunks."""
    s = p.LineSplitter(5)
    assert s.feed(b"12345\n") == [b"12345"]
    assert s.feed(b"123456\n") == [p.TooLong(6, 5)]
    assert s.feed(b"12") == [] and s.pending == 2
    assert s.feed(b"345\n") == [b"12345"] and s.pending == 0
    assert s.feed(b"123") == [] and s.feed(b"456") == [] and s.pending == 6
    assert s.feed(b"78") == [] and s.pending == 8
    assert s.feed(b"9\nab\n") == [p.TooLong(9, 5), b"ab"] and s.pending == 0
    assert s.feed(b"\n \n\t\nx\n") == [b"x"]
    assert s.feed(b"") == []
    assert p.LineSplitter().max == p.MAX_LINE_BYTES == 65536


def test_client_protocol_edges():
    """Planted bugs: ids not starting at 1, the client's own flaw check dropped or its
    message lost, a too-long server line not reported as such, a connection-level error's
    details dropped when it is tied to the oldest request, ``or`` for ``and`` there (a
    reply with no id would be re-tied too), the client's messages changed."""
    c = p.ClientProtocol("tui", max_line_bytes=100)
    assert c.server is None
    hid, data = c.hello()
    assert hid == 0 and p.parse_request(data.rstrip(b"\n")) == p.Request(0, "hello", {"version": 1, "client": "tui"})
    assert c.receive_data(b'{"type":"reply","id":0,"result":{"version":1,"server":"k"}}\n') == [
        p.Reply(0, {"version": 1, "server": "k"})]  # fmt: skip
    assert c.server == {"version": 1, "server": "k"}
    assert c.request("status")[0] == 1 and c.request("status", {"a": 1})[0] == 2
    with pytest.raises(ValueError) as err:
        c.request("users.add", {"email": "\ud800"})
    assert str(err.value) == "params.email contains a lone UTF-16 surrogate, which is not valid Unicode"
    assert c.waiting == [1, 2]
    got = c.receive_data(b'{"type":"error","id":null,"error":{"code":"parse_error","message":"m","details":{"k":1}}}\n')
    assert got == [p.ErrorReply(1, "parse_error", "m", {"k": 1})] and c.waiting == [2]
    with pytest.raises(p.ProtocolError) as perr:
        c.receive_data(b'{"type":"reply","id":null,"result":1}\n')
    assert (perr.value.code, perr.value.message) == ("invalid_request", "the server answered a request never sent (id None)")
    with pytest.raises(p.ProtocolError) as perr:
        c.receive_data(b"x" * 120 + b"\n")
    assert (perr.value.code, perr.value.message) == ("line_too_long", "the server sent a line of 120 bytes")
    assert perr.value.args == ("the server sent a line of 120 bytes",)
    old = p.ClientProtocol()
    old.hello(version=2)
    with pytest.raises(p.ProtocolError) as perr:
        old.receive_data(b'{"type":"reply","id":0,"result":{"version":2}}\n')
    assert perr.value.message == "the server's hello reply names no version this client speaks"
    assert old.server is None


def test_server_protocol_hello_errors_carry_the_id():
    """Planted bugs: the hello error without its request id; ``greeted`` not False at
    first."""
    s = p.ServerProtocol(["status"], "1.0")
    assert s.greeted is False
    [reply] = s.receive_data(b'{"id":"h1","method":"hello","params":{"version":9}}\n')
    assert isinstance(reply, p.ErrorReply) and (reply.id, reply.code) == ("h1", "unsupported_version")
    assert s.greeted is False


def test_depth_is_the_deepest_nesting_even_after_closed_siblings():
    """Planted bug: a closing bracket counted as -2 (siblings closed earlier make a
    deeper branch later look shallower, and JSON past MAX_DEPTH gets through)."""
    deep = "[" * 31 + "]" * 31  # 2 (the objects) + 31 = 33 levels
    err = _error(('{"id":1,"method":"m","params":{"a":[[],[],[]],"b":' + deep + "}}").encode())
    assert (err.code, err.message) == ("parse_error", f"JSON nested deeper than {p.MAX_DEPTH} levels")
    ok = "[" * 30 + "]" * 30  # 32 levels: accepted
    assert p.parse_request(('{"id":1,"method":"m","params":{"a":[[],[]],"b":' + ok + "}}").encode()).id == 1


def test_unreadable_top_level_fields_are_named():
    """Planted bugs: another label for a field name or value in the error text."""
    err = _error(b'{"id":1,"method":"m","\\ud800":1}')
    assert (err.code, err.id, err.message) == (
        "invalid_request", 1, "a field name contains a lone UTF-16 surrogate, which is not valid Unicode")  # fmt: skip
    err = _error(b'{"id":1,"method":"m","extra":"\\ud800"}')
    assert err.message == "extra contains a lone UTF-16 surrogate, which is not valid Unicode"


def test_client_hello_bytes_and_duplicate_ids():
    """Planted bugs: another default client name, the version asked for not sent, the
    duplicate-id refusal without its message."""
    c = p.ClientProtocol()
    _, data = c.hello(version=2)
    assert p.parse_request(data.rstrip(b"\n")).params == {"version": 2, "client": "client"}
    with pytest.raises(ValueError) as err:
        c.hello()
    assert str(err.value) == "request id 0 is already waiting for its reply"
