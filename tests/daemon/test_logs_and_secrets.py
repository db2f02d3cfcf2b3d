"""Secrets never reach a log line: the redaction processor and the Secret wrapper."""

import io
import json
import logging

import structlog

from kuloo_daemon import logs
from kuloo_daemon.secrets import Secret, mask

TOKEN = "7d1f" * 16


def _capture(fn) -> str:
    stream = io.StringIO()
    logs.configure("json", "debug", stream=stream)
    try:
        fn()
    finally:
        logs.configure("json", "info")
    return stream.getvalue()


def test_secret_values_keys_and_token_shapes_are_masked():
    def emit():
        log = structlog.get_logger("t")
        log.info("as a Secret", token=Secret(TOKEN))
        log.info("under a secret key", api_token=TOKEN, smtp_password="hunter2hunter2")
        log.info(f"inside a message {TOKEN} and Bearer {TOKEN[:20]}")
        log.info("nested", headers={"Authorization": f"Bearer {TOKEN}"}, items=[TOKEN])
        try:
            raise ValueError(f"request failed for {TOKEN}")
        except ValueError:
            log.exception("with a traceback")
        logging.getLogger("httpx").warning("stdlib logger saw %s", TOKEN)

    out = _capture(emit)
    assert TOKEN not in out and TOKEN[:20] not in out and "hunter2" not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 6
    assert lines[0]["token"] == mask(TOKEN) == "****" + TOKEN[-4:]
    assert lines[1]["api_token"].startswith("****")
    assert "Bearer ****" in lines[2]["event"]
    assert lines[5]["logger"] == "httpx" and "****" in lines[5]["event"]


def test_ordinary_values_pass_untouched():
    out = _capture(
        lambda: structlog.get_logger("t").info(
            "fine", email="ann@example.com", count=3, url="/v2/leads?page=2"
        )
    )
    line = json.loads(out)
    assert (
        line["email"] == "ann@example.com"
        and line["count"] == 3
        and line["url"] == "/v2/leads?page=2"
    )


def test_secret_wrapper_never_shows_its_value():
    s = Secret(TOKEN)
    assert (
        TOKEN not in repr(s)
        and TOKEN not in str(s)
        and TOKEN not in f"{s}"
        and TOKEN not in f"{[s]}"
    )
    assert s.reveal() == TOKEN and s == Secret(TOKEN) and s != Secret("other")
    assert mask("short") == "****" and mask("") == ""
