"""Tokens that do not look like tokens never reach a log line, at any log level or format.

Redaction by shape alone missed letters-only, dotted and short tokens, and tortoise and
aiosqlite printed them as SQL parameters at DEBUG; console tracebacks showed local
variables (a revealed token among them) after the redaction step had run.
"""

import io
import logging
import os

import structlog

from kuloo_daemon import logs
from kuloo_daemon.secrets import Secret

# Accepted by channels.update (20-512 characters, no spaces), none of them token-shaped.
ODD_TOKENS = [
    "QwErTyUiOpAsDfGhJkLzXcV",  # 23 letters
    "abc.def.ghi.jkl.mno.pqr",  # dotted, 23
    "OnlyLettersInThisSellTokenButQuiteLongOne",  # letters, 41
]


def _runs(token: str, n: int = 12) -> list[str]:
    return [token[i : i + n] for i in range(len(token) - n + 1)]


def _leaks(text: str) -> list[str]:
    return [t for t in ODD_TOKENS if any(run in text for run in _runs(t))]


def _daemon_session(d, channel_id=None):
    with d.client() as c:
        if channel_id is None:
            channel_id = c.call("channels.create", {"name": "Acme"})["id"]
        for token in ODD_TOKENS:
            doc = c.call("channels.update", {"id": channel_id, "api_token": token})
            assert doc["api_token"] == "****" + token[-4:]
            assert doc["connection"]["status"] == "unverified"  # Sell unreachable in this test
            c.call("channels.list")
            c.call("channels.verify", {"id": channel_id})
    return channel_id


def test_odd_tokens_never_reach_the_log_even_at_debug(daemon_factory):
    d = daemon_factory()  # log.level = "debug", JSON
    d.start()
    d.wait_for("READY=1")
    channel_id = _daemon_session(d)
    assert d.stop() == 0
    # again after a restart, with the tokens coming out of the store, in console format
    d2 = daemon_factory(sub="again")
    d2.config_path.write_text(
        d2.config_path.read_text()
        .replace(str(d2.root / "state"), str(d.root / "state"))
        .replace('format = "json"', 'format = "console"')
    )
    d2.start()
    d2.wait_for("READY=1")
    _daemon_session(d2, channel_id)
    assert d2.stop() == 0
    log = d.log() + d2.log()
    assert "channel updated" in log and '"level": "debug"' in log  # the debug log did run
    assert _leaks(log) == [], "a token reached the log"


def _capture(fmt: str, fn) -> str:
    stream = io.StringIO()
    logs.configure(fmt, "debug", stream=stream)
    try:
        fn()
    finally:
        logs.configure("json", "info")
    return stream.getvalue()


def test_known_secrets_are_masked_by_value_whatever_their_shape():
    token = "ZyXwVuTsRqPoNmLkJiHgFeD.cba"
    Secret(token)  # every Secret created joins the registry

    def emit():
        log = structlog.get_logger("t")
        log.info(f"a message with {token} inside")
        log.info("a value", url=f"https://x.invalid/?t={token}", items=[token[:15]])
        logging.getLogger("httpx").info("stdlib saw %s", token)

    for fmt in ("json", "console"):
        out = _capture(fmt, emit)
        assert token[:8] not in out, out
        assert out.count("****") >= 4


async def test_tokens_in_the_store_are_known_from_start_up(short_tmp):
    """A token stored earlier (no Secret of it was created in this process) is masked once
    the store has opened."""
    from kuloo_daemon.store.bridge import Store

    token = "storedTokenOnlyLettersAndDots.abcdefg"
    path = os.path.join(short_tmp, "s.sqlite3")

    async def store_a_token() -> (
        None
    ):  # as an earlier run of the daemon left it: no Secret made here
        from kuloo_daemon.store.models import Channel

        await Channel.create(name="A", sell_token=token)

    async with Store.open(path) as store:
        await store.run(store_a_token)
    out = _capture("json", lambda: structlog.get_logger("t").info(f"seen {token}"))
    assert token in out  # not known yet: nothing in this process has handled it as a secret
    async with Store.open(path):
        out = _capture("json", lambda: structlog.get_logger("t").info(f"seen {token}"))
    assert token[:8] not in out and "****" in out


def _fail_with_a_revealed_token():
    password = "lettersOnlyLocalValueNeverShown"  # a local, as in crm/client.py's request()
    secret = Secret("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh").reveal()
    raise RuntimeError(f"could not use {secret[:10]} with {len(password)}")


def test_tracebacks_show_no_locals_and_are_scrubbed_after_rendering():
    def emit():
        try:
            _fail_with_a_revealed_token()
        except RuntimeError:
            structlog.get_logger("t").exception("request failed")

    for fmt in ("console", "json"):
        out = _capture(fmt, emit)
        assert "_fail_with_a_revealed_token" in out and "RuntimeError" in out  # a traceback
        assert "lettersOnlyLocalValue" not in out, out  # no locals
        assert "ABCDEFGH" not in out, out  # nor the revealed token, whole or cut
