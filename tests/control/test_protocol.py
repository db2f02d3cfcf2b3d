"""The sans-IO control protocol: framing, parsing, and golden exchanges with the daemon."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from kuloo_daemon.control import protocol as p

GOLDEN = Path(__file__).parent / "golden"


def test_splitter_reassembles_lines_across_chunks():
    s = p.LineSplitter(100)
    assert s.feed(b'{"a":') == []
    assert s.feed(b'1}\n{"b"') == [b'{"a":1}']
    assert s.feed(b":2}\n\n") == [b'{"b":2}']
    assert s.pending == 0


def test_splitter_drops_an_overlong_line_once_and_recovers():
    s = p.LineSplitter(10)
    out = s.feed(b"x" * 8)
    out += s.feed(b"y" * 8)  # now over the limit, still no newline
    out += s.feed(b"z" * 5 + b"\nok\n")
    assert out == [p.TooLong(21, 10), b"ok"]
    assert s.feed(b"x" * 11 + b"\n") == [p.TooLong(11, 10)]


@pytest.mark.parametrize(
    "line, code",
    [
        (b"\xff\xfe", "parse_error"),
        (b"{", "parse_error"),
        (b'"just a string"', "invalid_request"),
        (b'{"method":"status"}', "invalid_request"),
        (b'{"id":true,"method":"status"}', "invalid_request"),
        (b'{"id":1}', "invalid_request"),
        (b'{"id":1,"type":"reply","method":"x"}', "invalid_request"),
        (b'{"id":1,"method":"status","params":[1]}', "invalid_params"),
    ],
)
def test_parse_request_rejects(line, code):
    with pytest.raises(p.ProtocolError) as err:
        p.parse_request(line)
    assert err.value.code == code


def test_parse_request_ignores_unknown_fields_and_defaults_params():
    r = p.parse_request(b'{"id":"a1","method":"status","whatever":1}')
    assert r == p.Request("a1", "status", {})


def test_encode_and_parse_round_trip():
    for message in [
        p.Reply(3, {"x": [1, "é"]}),
        p.ErrorReply(None, "parse_error", "bad", {"k": 1}),
        p.Event("e", {"a": 1}),
    ]:
        assert p.parse_message(p.encode(message)) == message
    assert p.encode(p.Request(1, "m", {})).endswith(b"\n")


def test_error_codes_are_documented_in_the_module():
    doc = p.__doc__ + "".join(p.ERROR_CODES.values())
    for code in p.ERROR_CODES:
        assert code in p.ERROR_CODES and p.ERROR_CODES[code], code
    assert "hello" in doc


@pytest.mark.parametrize("limit", [10, 1024])
def test_a_line_of_exactly_the_limit_is_accepted_and_one_byte_more_is_too_long(limit):
    exact, over = b"x" * limit, b"y" * (limit + 1)
    assert p.LineSplitter(limit).feed(exact + b"\n") == [exact]
    assert p.LineSplitter(limit).feed(over + b"\n") == [p.TooLong(limit + 1, limit)]
    # the same, arriving in pieces: the buffered part alone reaches (or passes) the limit
    s = p.LineSplitter(limit)
    assert s.feed(exact) == [] and s.feed(b"\n") == [exact]
    assert s.feed(over) == [] and s.feed(b"\nnext\n") == [p.TooLong(limit + 1, limit), b"next"]
    s = p.LineSplitter(limit)
    assert s.feed(exact[:-1]) == [] and s.feed(b"x\n" + over[:1]) == [exact]
    assert s.feed(over[1:] + b"\n") == [p.TooLong(limit + 1, limit)]


def _request_line(size: int) -> bytes:
    """A valid status request padded with spaces to exactly ``size`` bytes."""
    core = b'{"type":"request","id":1,"method":"status"}'
    return core[:-1] + b" " * (size - len(core)) + b"}"


def test_server_protocol_answers_a_line_of_exactly_the_limit_and_refuses_one_byte_more():
    proto = p.ServerProtocol(["status"], "test", max_line_bytes=1024)
    proto.receive_data(p.encode(p.hello(0)))
    assert proto.receive_data(_request_line(1024) + b"\n") == [p.Request(1, "status", {})]
    [too_long] = proto.receive_data(_request_line(1025) + b"\n")
    assert (
        isinstance(too_long, p.ErrorReply)
        and too_long.code == "line_too_long"
        and too_long.id is None
    )


DEEP = b'{"id":1,"method":"status","params":{"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}}"


@pytest.mark.parametrize(
    "line, code, rid, fragment",
    [
        # nesting: refused before json.loads can recurse
        (DEEP, "parse_error", None, "nested deeper than 32"),
        (
            b'{"id":1,"method":"status","params":{"x":' + b"[" * 31 + b"]" * 31 + b"}}",
            "parse_error",
            None,
            "deeper",
        ),
        (b'{"id":1,"method":"status","params":{"x":NaN}}', "parse_error", None, "NaN"),
        (b'{"id":1,"method":"status","params":{"x":-Infinity}}', "parse_error", None, "Infinity"),
        (
            b'{"id":1,"method":"status","params":{"x":1e400}}',
            "invalid_params",
            1,
            "params.x is too large",
        ),
        # lone surrogates, in values and keys, at any depth
        (rb'{"id":"\ud800","method":"status"}', "invalid_request", None, "id"),
        (rb'{"id":1,"method":"stat\udfffus"}', "invalid_request", 1, "surrogate"),
        (rb'{"id":1,"method":"status","note\ud800":1}', "invalid_request", 1, "surrogate"),
        (
            rb'{"id":1,"method":"channels.create","params":{"name":"a","sequential_tags":["\ud800"]}}',
            "invalid_params",
            1,
            "params.sequential_tags[0] contains a lone UTF-16 surrogate",
        ),
        (
            rb'{"id":2,"method":"channels.get","params":{"\udc00":1}}',
            "invalid_params",
            2,
            "a key in params",
        ),
        (
            rb'{"id":3,"method":"x","params":{"a":{"b":[{"c":"ok \ud83d"}]}}}',
            "invalid_params",
            3,
            "params.a.b[0].c",
        ),
        # integers beyond signed 64 bits
        (b'{"id":9223372036854775808,"method":"status"}', "invalid_request", None, "64-bit"),
        (b'{"id":-9223372036854775809,"method":"status"}', "invalid_request", None, "64-bit"),
        (
            b'{"id":1,"method":"channels.get","params":{"id":9223372036854775808}}',
            "invalid_params",
            1,
            "params.id is outside",
        ),
        (
            b'{"id":1,"method":"channels.get","params":{"id":-9223372036854775809}}',
            "invalid_params",
            1,
            "64-bit",
        ),
        (
            b'{"id":1,"method":"x","params":{"l":[1,2,' + str(10**30).encode() + b"]}}",
            "invalid_params",
            1,
            "params.l[2]",
        ),
    ],
)
def test_values_no_store_or_encoder_could_keep_are_refused_at_parse_time(line, code, rid, fragment):
    with pytest.raises(p.ProtocolError) as err:
        p.parse_request(line)
    assert (err.value.code, err.value.id) == (code, rid)
    assert fragment in err.value.message


def test_values_just_inside_the_limits_are_accepted():
    edge = (
        b'{"id":9223372036854775807,"method":"m","params":{"lo":-9223372036854775808,"s":"\\ud83d\\ude00",'
        b'"x":' + b"[" * 30 + b"]" * 30 + b',"f":1e308,"t":true}}'
    )
    r = p.parse_request(edge)
    assert r.id == 2**63 - 1 and r.params["lo"] == -(2**63) and r.params["s"] == "\U0001f600"
    assert r.params["t"] is True
    assert p.parse_request(b'{"id":-9223372036854775808,"method":"m"}').id == -(2**63)
    # brackets inside strings are not nesting
    assert (
        p.parse_request(b'{"id":1,"method":"m","params":{"s":"' + b"[" * 100 + b'\\"]"}}').params[
            "s"
        ]
        == "[" * 100 + '"]'
    )


def test_encode_never_fails_on_a_stored_lone_surrogate():
    line = p.encode(p.Reply(1, {"tags": ["ok", "bad\ud800"]}))
    assert p.parse_message(line) == p.Reply(1, {"tags": ["ok", "bad\ufffd"]})


def test_server_protocol_requires_hello_then_passes_requests_on():
    proto = p.ServerProtocol(["status", "subscribe"], "9.9", max_line_bytes=1024)
    out = proto.receive_data(
        b'{"id":1,"method":"status"}\n{"id":2,"method":"hello","params":{"version":1}}\n'
        b'{"id":3,"method":"status"}\nnot json\n'
    )
    assert out[0] == p.ErrorReply(
        1, "hello_required", "send hello with your protocol version first"
    )
    assert out[1] == p.Reply(
        2,
        {
            "version": p.PROTOCOL_VERSION,
            "server": "kuloo-daemon",
            "server_version": "9.9",
            "methods": ["hello", "status", "subscribe"],
        },
    )
    assert out[2] == p.Request(3, "status", {})
    assert isinstance(out[3], p.ErrorReply) and out[3].code == "parse_error" and out[3].id is None
    [again] = proto.receive_data(b'{"id":4,"method":"hello","params":{"version":2}}\n')
    assert again.code == "unsupported_version" and again.details == {"supported": [1]}


def test_client_protocol_correlates_replies_and_tells_events_apart():
    c = p.ClientProtocol("tester")
    hid, hello_bytes = c.hello()
    assert p.parse_request(hello_bytes) == p.Request(
        hid, "hello", {"version": 1, "client": "tester"}
    )
    a, a_bytes = c.request("status")
    b, _ = c.request("channels.get", {"id": 1})
    assert len({hid, a, b}) == 3 and p.parse_request(a_bytes).method == "status"
    assert c.waiting == [hid, a, b]
    hello_reply = p.encode(p.Reply(hid, {"version": 1, "methods": ["status"]}))
    event = p.encode(p.Event("channel.updated", {"id": 1}))
    # the server could not read b's line: its error has no id and belongs to the oldest waiting
    out = c.receive_data(hello_reply + event + p.encode(p.Reply(a, {"ok": 1}))[:5])
    assert out == [
        p.Reply(hid, {"version": 1, "methods": ["status"]}),
        p.Event("channel.updated", {"id": 1}),
    ]
    assert c.server == {"version": 1, "methods": ["status"]}
    out = c.receive_data(
        p.encode(p.Reply(a, {"ok": 1}))[5:] + p.encode(p.ErrorReply(None, "line_too_long", "x"))
    )
    assert out == [p.Reply(a, {"ok": 1}), p.ErrorReply(b, "line_too_long", "x")]
    assert c.waiting == []
    # with nothing waiting, an error without id is about the connection (the server closing it)
    assert c.receive_data(p.encode(p.ErrorReply(None, "internal", "bye"))) == [
        p.ErrorReply(None, "internal", "bye")
    ]


@pytest.mark.parametrize(
    "server_line, code",
    [
        (b"HTTP/1.1 400 Bad Request\r\n", "parse_error"),
        (b'{"type":"reply","id":99,"result":1}', "invalid_request"),
        (b'{"type":"surprise"}', "invalid_request"),
        (b'{"type":"reply","id":0,"result":{"version":7}}', "unsupported_version"),
    ],
)
def test_client_protocol_refuses_what_is_not_an_answer(server_line, code):
    c = p.ClientProtocol()
    c.hello()
    with pytest.raises(p.ProtocolError) as err:
        c.receive_data(server_line + b"\n")
    assert err.value.code == code


VOLATILE = re.compile(
    r'"(daemon|pid|uptime_seconds|created_at|updated_at|verified_at|checked_at|store|seconds_since_tick|ticks|server_version|now|kuloo_id|at|url|bytes)":(\{"id":"[^"]*"\}|"[^"]*"|[0-9.]+|null)'
)


def _normalise(line: str) -> str:
    return VOLATILE.sub(lambda m: f'"{m.group(1)}":"<{m.group(1)}>"', line)


@pytest.mark.parametrize("name", sorted(f.name for f in GOLDEN.glob("*.jsonl")))
def test_golden_exchange(daemon, name):
    """Replays a recorded exchange: '> ' lines are sent, '< ' lines must come back (volatile fields masked).

    KULOO_REGEN_GOLDEN=1 rewrites the files from what the daemon answers now.
    """
    path = GOLDEN / name
    script = path.read_text().splitlines()
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket_path)
    f = s.makefile("rwb")
    got: list[str] = []
    expected: list[str] = []
    for line in script:
        if line.startswith("> "):
            got.append(line)
            f.write(line[2:].encode() + b"\n")
            f.flush()
            reply = f.readline().decode().rstrip("\n")
            got.append("< " + _normalise(reply))
        elif line.startswith("< "):
            expected.append(line)
    s.close()
    if os.environ.get("KULOO_REGEN_GOLDEN"):
        path.write_text("\n".join(got) + "\n")
    assert [g for g in got if g.startswith("< ")] == expected
    for g in got:  # every server line is valid JSON of a known kind
        if g.startswith("< "):
            assert json.loads(g[2:])["type"] in ("reply", "error")


@pytest.mark.anyio
async def test_the_client_protocol_drives_an_asyncio_client_too(daemon):
    """The TUI's side: the same ClientProtocol over asyncio streams, against the real daemon."""
    import asyncio

    reader, writer = await asyncio.open_unix_connection(daemon.socket_path)
    proto = p.ClientProtocol("asyncio-test")
    got: list = []

    async def answer(request_id):
        while True:
            for message in got:
                if not isinstance(message, p.Event) and message.id == request_id:
                    got.remove(message)
                    return message
            got.extend(proto.receive_data(await asyncio.wait_for(reader.read(65536), 10)))

    hid, data = proto.hello()
    writer.write(data)
    assert isinstance(await answer(hid), p.Reply) and proto.server["version"] == p.PROTOCOL_VERSION
    sub, data = proto.request("subscribe")
    writer.write(data)
    create, data = proto.request("channels.create", {"name": "via asyncio"})
    writer.write(data)
    missing, data = proto.request("channels.get", {"id": 99})
    writer.write(data)
    assert (await answer(sub)).result == {"subscribed": True}
    assert (await answer(create)).result["name"] == "via asyncio"
    error = await answer(missing)
    assert isinstance(error, p.ErrorReply) and error.code == "not_found"
    assert [m.event for m in got if isinstance(m, p.Event)] == ["channel.updated"]
    writer.close()
    await writer.wait_closed()


# ----------------------------------------------------------------------------- at the edges
# (formerly test_protocol_bounds.py)
# The control protocol at its edges: ids, params, server messages, hello, framing.
#
# Written to kill the mutants `make mutate` found surviving in control/protocol.py; each
# test names the planted bugs it was checked against. (The line-length boundary at the
# socket level, issue 14 item 4, is tested with the server.)


def _error(line) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as err:
        p.parse_request(line)
    return err.value


@pytest.mark.parametrize(
    ("rid", "ok"),
    [
        (0, True),
        (-5, True),
        ("a", True),
        ("x" * 100, True),
        ("x" * 101, False),
        ("", True),
        (2**63 - 1, True),
        (2**63, False),
        (-(2**63), True),
        (-(2**63) - 1, False),
        (True, False),
        (False, False),
        (1.5, False),
        (None, False),
        ([1], False),
        ("\ud800", False),
    ],
)
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
    assert (err.code, err.id, err.message) == (
        "invalid_request",
        "q",
        "a request needs a method name",
    )
    err = _error(b'{"id":5,"method":7}')
    assert (err.code, err.id) == ("invalid_request", 5)
    err = _error(b'{"id":6,"method":"m","params":"x"}')
    assert (err.code, err.id, err.message) == ("invalid_params", 6, "params must be a JSON object")
    err = _error(b"[1]")
    assert (err.code, err.id, err.message) == (
        "invalid_request",
        None,
        "a request must be a JSON object",
    )
    err = _error(b"\xff")
    assert err.code == "parse_error" and err.message.startswith("not valid JSON: ")
    assert err.__suppress_context__
    err = _error(p.TooLong(70000, 65536))
    assert (err.code, err.message) == (
        "line_too_long",
        "line of 70000 bytes dropped; the limit is 65536",
    )


def test_requests_that_are_fine():
    """Planted bugs: an explicit ``"type": "request"`` refused, ``"params": null`` refused
    or kept as None, params dropped."""
    assert p.parse_request(b'{"type":"request","id":1,"method":"m","params":null}') == p.Request(
        1, "m", {}
    )
    assert p.parse_request(b'{"id":1,"method":"m","params":{"a":[1]}}') == p.Request(
        1, "m", {"a": [1]}
    )


def test_server_messages_on_the_client_side():
    """Planted bugs: a reply's id or result dropped, an error without a code not read as
    "internal", a non-dict error body crashing, an event's name or data dropped, an
    unknown kind accepted."""
    assert p.parse_message(b'{"type":"reply","id":9,"result":{"a":1}}') == p.Reply(9, {"a": 1})
    assert p.parse_message(b'{"type":"error","id":2}') == p.ErrorReply(2, "internal", "", None)
    assert p.parse_message(b'{"type":"error","id":2,"error":"boom"}') == p.ErrorReply(
        2, "internal", "", None
    )
    assert p.parse_message(
        b'{"type":"error","id":2,"error":{"code":"not_found","message":"m","details":[1]}}'
    ) == p.ErrorReply(2, "not_found", "m", [1])
    assert p.parse_message(b'{"type":"event","event":"x.y","data":[1]}') == p.Event("x.y", [1])
    assert p.parse_message(b'{"type":"event"}') == p.Event("", None)
    for line, message in [
        (b'{"type":"request","id":1}', "unknown message type 'request'"),
        (b"{}", "unknown message type None"),
        (b"[]", "a server message must be a JSON object"),
    ]:
        with pytest.raises(p.ProtocolError) as err:
            p.parse_message(line)
        assert (err.value.code, err.value.message) == ("invalid_request", message)


def test_encoding_is_one_compact_utf8_line():
    """Planted bugs: spaces in the separators, ASCII escapes, a missing newline, details
    sent as null, another key name."""
    assert (
        p.encode(p.Request(1, "m", {"a": "é"}))
        == '{"type":"request","id":1,"method":"m","params":{"a":"é"}}\n'.encode()
    )
    assert p.encode(p.Reply("r", None)) == b'{"type":"reply","id":"r","result":null}\n'
    assert (
        p.encode(p.ErrorReply(3, "conflict", "no"))
        == b'{"type":"error","id":3,"error":{"code":"conflict","message":"no"}}\n'
    )
    assert (
        p.encode(p.ErrorReply(3, "conflict", "no", {"k": 1}))
        == b'{"type":"error","id":3,"error":{"code":"conflict","message":"no","details":{"k":1}}}\n'
    )
    assert p.encode(p.Event("e")) == b'{"type":"event","event":"e","data":null}\n'
    from datetime import date

    assert (
        p.encode(p.Reply(1, {"d": date(2026, 1, 2)}))
        == b'{"type":"reply","id":1,"result":{"d":"2026-01-02"}}\n'
    )


def test_error_reply_prefers_the_errors_own_id():
    """Planted bugs: the fallback id always used, or never."""
    assert p.error_reply(p.ProtocolError("conflict", "m", 5), 9) == p.ErrorReply(
        5, "conflict", "m", None
    )
    assert p.error_reply(p.ProtocolError("conflict", "m", None, {"x": 1}), 9) == p.ErrorReply(
        9, "conflict", "m", {"x": 1}
    )
    assert p.error_reply(p.ProtocolError("conflict", "m", 0), 9).id == 0  # 0 is an id
    with pytest.raises(AssertionError):
        p.ProtocolError("no_such_code", "m")


def test_hello_both_sides():
    """Planted bugs: a boolean or missing version accepted, the supported list missing
    from the refusal, the client's version and name not sent."""
    assert p.hello(3, "tui") == p.Request(
        3, "hello", {"version": p.PROTOCOL_VERSION, "client": "tui"}
    )
    assert p.hello() == p.Request(0, "hello", {"version": 1, "client": "client"})
    assert p.check_hello({"version": 1}, 7) == 1
    for params in ({}, {"version": True}, {"version": "1"}, {"version": 1.0}):
        with pytest.raises(p.ProtocolError) as err:
            p.check_hello(params, 7)
        assert (err.value.code, err.value.id, err.value.message) == (
            "invalid_params",
            7,
            "hello needs an integer 'version'",
        )
    with pytest.raises(p.ProtocolError) as err:
        p.check_hello({"version": 2}, 8)
    assert (err.value.code, err.value.id, err.value.details) == (
        "unsupported_version",
        8,
        {"supported": [1]},
    )
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
    assert hid == 0 and p.parse_request(data.rstrip(b"\n")) == p.Request(
        0, "hello", {"version": 1, "client": "tui"}
    )
    assert c.receive_data(b'{"type":"reply","id":0,"result":{"version":1,"server":"k"}}\n') == [
        p.Reply(0, {"version": 1, "server": "k"})
    ]
    assert c.server == {"version": 1, "server": "k"}
    assert c.request("status")[0] == 1 and c.request("status", {"a": 1})[0] == 2
    with pytest.raises(ValueError) as err:
        c.request("users.add", {"email": "\ud800"})
    assert (
        str(err.value)
        == "params.email contains a lone UTF-16 surrogate, which is not valid Unicode"
    )
    assert c.waiting == [1, 2]
    got = c.receive_data(
        b'{"type":"error","id":null,"error":{"code":"parse_error","message":"m","details":{"k":1}}}\n'
    )
    assert got == [p.ErrorReply(1, "parse_error", "m", {"k": 1})] and c.waiting == [2]
    with pytest.raises(p.ProtocolError) as perr:
        c.receive_data(b'{"type":"reply","id":null,"result":1}\n')
    assert (perr.value.code, perr.value.message) == (
        "invalid_request",
        "the server answered a request never sent (id None)",
    )
    with pytest.raises(p.ProtocolError) as perr:
        c.receive_data(b"x" * 120 + b"\n")
    assert (perr.value.code, perr.value.message) == (
        "line_too_long",
        "the server sent a line of 120 bytes",
    )
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
    assert isinstance(reply, p.ErrorReply) and (reply.id, reply.code) == (
        "h1",
        "unsupported_version",
    )
    assert s.greeted is False


def test_depth_is_the_deepest_nesting_even_after_closed_siblings():
    """Planted bug: a closing bracket counted as -2 (siblings closed earlier make a
    deeper branch later look shallower, and JSON past MAX_DEPTH gets through)."""
    deep = "[" * 31 + "]" * 31  # 2 (the objects) + 31 = 33 levels
    err = _error(('{"id":1,"method":"m","params":{"a":[[],[],[]],"b":' + deep + "}}").encode())
    assert (err.code, err.message) == (
        "parse_error",
        f"JSON nested deeper than {p.MAX_DEPTH} levels",
    )
    ok = "[" * 30 + "]" * 30  # 32 levels: accepted
    assert (
        p.parse_request(('{"id":1,"method":"m","params":{"a":[[],[]],"b":' + ok + "}}").encode()).id
        == 1
    )


def test_unreadable_top_level_fields_are_named():
    """Planted bugs: another label for a field name or value in the error text."""
    err = _error(b'{"id":1,"method":"m","\\ud800":1}')
    assert (err.code, err.id, err.message) == (
        "invalid_request",
        1,
        "a field name contains a lone UTF-16 surrogate, which is not valid Unicode",
    )
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
