"""The sans-IO control protocol: framing, parsing, and golden exchanges with the daemon."""

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
    for message in [p.Reply(3, {"x": [1, "é"]}), p.ErrorReply(None, "parse_error", "bad", {"k": 1}), p.Event("e", {"a": 1})]:
        assert p.parse_message(p.encode(message)) == message
    assert p.encode(p.Request(1, "m", {})).endswith(b"\n")


def test_error_codes_are_documented_in_the_module():
    doc = p.__doc__ + "".join(p.ERROR_CODES.values())
    for code in p.ERROR_CODES:
        assert code in p.ERROR_CODES and p.ERROR_CODES[code], code
    assert "hello" in doc


VOLATILE = re.compile(r'"(pid|uptime_seconds|created_at|updated_at|verified_at|checked_at|store|seconds_since_tick|ticks|server_version|now|kuloo_id|at|url)":("[^"]*"|[0-9.]+|null)')


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
