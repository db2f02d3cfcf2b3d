"""The cross-key checks of the configuration, in process and with their exact texts.

``test_config_limits.py`` proves the refusals through ``check-config`` and ``run`` as
subprocesses, as an operator meets them; a subprocess imports the checkout, not a
mutated copy, so those tests cannot tell a working check from a broken one under
``make mutate``. These call ``from_mapping`` directly (real files and a real symlink
where a path is judged) and compare whole messages. Each test names the bugs planted
against it (mutation survivors of issue 14), each of which made it fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kuloo_daemon import config as c

SYSTEM_TAIL = ", in the system folder /etc; keep it under daemon.state_dir"


def _base(tmp: Path, **sections) -> dict:
    data: dict = {"daemon": {"state_dir": str(tmp / "state")}, "control": {"socket": str(tmp / "c.sock")}}
    for section, body in sections.items():
        data.setdefault(section, {}).update(body)
    return data


def _problems(data: dict, path: Path | None = None) -> list[str]:
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping(data, path)
    return err.value.problems


@pytest.mark.parametrize("database, problem", [
    (":memory:", "':memory:' must be a file name, not a special SQLite name"),
    ("file:x.sqlite3?mode=memory", "'file:x.sqlite3?mode=memory' must be a file name, not a special SQLite name"),
    ("db/", "'db/' must be a file name, not a folder"),
    (".", "'.' must be a file name, not a folder"),
    ("..", "'..' must be a file name, not a folder"),
    ("../x.sqlite3", "'../x.sqlite3' must stay inside daemon.state_dir (no '..')"),
    ("sub/../x.sqlite3", "'sub/../x.sqlite3' must stay inside daemon.state_dir (no '..')"),
    ("/etc/passwd", "'/etc/passwd'" + SYSTEM_TAIL),
    ("/etc", "'/etc'" + SYSTEM_TAIL),
])
def test_database_refusals_say_exactly_why(tmp_path, database, problem):
    """Planted bugs: ``and`` for ``or`` between the special-name tests and between the
    folder tests, the ``'.'``/``'..'``/``'/'``/``file:`` literals changed, the ``'..'``
    test inverted or applied to absolute paths, the system-folder test needing both an
    exact and a prefix match, the check's result dropped by ``from_mapping``."""
    assert _problems(_base(tmp_path, store={"database": database})) == [f"store.database: {problem}"]


@pytest.mark.parametrize("database", ["kuloo.sqlite3", "db/kuloo.sqlite3", "/srv/kuloo/../kuloo/k.sqlite3",
                                      "/var/lib/kuloo/other.sqlite3", "/etcetera/k.sqlite3", "..k.sqlite3"])
def test_sensible_database_places_are_accepted(tmp_path, database):
    """Planted bugs: ``'..'`` refused in an absolute path (it cannot leave a state folder
    it never joins), a prefix test without the ``/`` (``/etcetera`` is not ``/etc``)."""
    config = c.from_mapping(_base(tmp_path, store={"database": database}))
    assert config["store.database"] == database


def test_the_default_database_name_is_judged_where_it_will_be(tmp_path):
    """Planted bugs: the default name dropped or changed before the system-folder test
    (the message must name the file that would be opened)."""
    data = _base(tmp_path)
    data["daemon"]["state_dir"] = "/etc/kuloo"
    assert _problems(data) == ["store.database: '/etc/kuloo/kuloo.sqlite3'" + SYSTEM_TAIL]


def test_a_symlink_into_a_system_folder_is_named_with_where_it_leads(tmp_path):
    """Planted bugs: the message always in the direct form or always in the "leads to"
    form, or naming ``None`` instead of the configured path."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "sys").symlink_to("/etc")
    problems = _problems(_base(tmp_path, store={"database": "sys/kuloo.sqlite3"}))
    assert problems == [f"store.database: '{state}/sys/kuloo.sqlite3' leads to '/etc/kuloo.sqlite3'" + SYSTEM_TAIL]


def test_an_empty_control_socket_is_refused_with_its_text(tmp_path):
    """Planted bug: the message changed or dropped (the subprocess test cannot see it)."""
    data = _base(tmp_path)
    data["control"]["socket"] = "  "
    assert _problems(data) == ["control.socket: must not be empty (a path such as /run/kuloo/control.sock)"]


@pytest.mark.parametrize("url, ok", [
    ("https://links.example.com", True), ("http://127.0.0.1:8080", True),
    ("ftp://links.example.com", False), ("links.example.com", False), ("HTTPS://x.test", False),
])
def test_public_url_schemes(tmp_path, url, ok):
    """Planted bugs: the scheme test inverted, a scheme literal changed, the message
    changed or dropped."""
    data = _base(tmp_path, links={"public_url": url})
    if ok:
        assert c.from_mapping(data)["links.public_url"] == url
    else:
        assert _problems(data) == ["links.public_url: must start with https:// (or http:// for tests)"]


def test_maildir_transport_needs_a_folder(tmp_path):
    """Planted bugs: the transport literal changed, the folder test inverted, the
    message changed or dropped."""
    assert _problems(_base(tmp_path, delivery={"transport": "maildir"})) == [
        'delivery.maildir: required when delivery.transport = "maildir"'
    ]
    config = c.from_mapping(_base(tmp_path, delivery={"transport": "maildir", "maildir": str(tmp_path / "md")}))
    assert config["delivery.maildir"] == str(tmp_path / "md")


def test_articles_root_and_maildir_are_relative_to_the_file_and_only_then(tmp_path):
    """Planted bugs: the two keys resolved without a file (crash), not resolved with one,
    absolute ones re-joined, the resolved value replaced."""
    toml = tmp_path / "etc" / "k.toml"
    toml.parent.mkdir()
    body = {"articles": {"root": "arts"}, "delivery": {"maildir": "md"}}
    config = c.from_mapping(_base(tmp_path, **body), toml)
    assert config["articles.root"] == str(tmp_path / "etc" / "arts")
    assert config["delivery.maildir"] == str(tmp_path / "etc" / "md")
    config = c.from_mapping(_base(tmp_path, **body))
    assert (config["articles.root"], config["delivery.maildir"]) == ("arts", "md")
    absolute = {"articles": {"root": "/srv/arts"}, "delivery": {"maildir": "/srv/md"}}
    config = c.from_mapping(_base(tmp_path, **absolute), toml)
    assert (config["articles.root"], config["delivery.maildir"]) == ("/srv/arts", "/srv/md")


def test_sell_limits_beyond_sells_own_only_against_loopback(tmp_path):
    """Planted bugs: the 10/s limit moved (10.5 accepted for a real Sell), the messages
    changed."""
    real = {"base_url": "https://api.getbase.com"}
    assert c.from_mapping(_base(tmp_path, sell={**real, "requests_per_second": 10}))["sell.requests_per_second"] == 10
    assert _problems(_base(tmp_path, sell={**real, "requests_per_second": 10.5})) == [
        "sell.requests_per_second: Sell allows 10 requests per second; more is only accepted for a loopback "
        "sell.base_url (sellsim)"
    ]
    assert _problems(_base(tmp_path, sell=real, sync={"cadence_seconds": 5})) == [
        "sync.cadence_seconds: only for tests against a loopback sell.base_url (sellsim); real channels sync "
        "at their plan's cadence"
    ]


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:9", True), ("http://[::1]:9", True), ("http://localhost:9", True),
    ("https://api.getbase.com", False), ("http://[::1", False), ("http://10.0.0.1", False), ("http://", False),
])
def test_loopback_urls(url, loopback):
    """Planted bug: a URL that cannot be parsed (``http://[::1``) counted as loopback,
    which would let a raised rate through against whatever it names."""
    assert c.is_loopback_url(url) is loopback


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:0", ("::1", 0)),
    ("[fe80::1]:65535", ("fe80::1", 65535)),
    ("[::1:8080", ("[::1", 8080)),  # only a bracketed host is unwrapped
    ("h]:1", ("h]", 1)),
])
def test_listen_addresses(text, expected):
    """Planted bugs: ``partition`` for ``rpartition`` (an IPv6 host split at its first
    colon), port 0 or 65535 refused, the brackets unwrapped when only one is there or
    cut wrongly."""
    assert c.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:65536", "host:-1"])
def test_bad_listen_addresses_are_reported_whole(tmp_path, text):
    """Planted bugs: ``and`` for ``or`` between the tests (a missing host or port
    accepted, ``int('http')`` raising its own message), 65536 accepted, the message
    dropped."""
    with pytest.raises(ValueError) as err:
        c.parse_listen(text)
    assert str(err.value) == f"{text!r} is not HOST:PORT (port 0 to 65535)"
    assert _problems(_base(tmp_path, links={"listen": text})) == [f"links.listen: {text!r} is not HOST:PORT (port 0 to 65535)"]


@pytest.mark.parametrize("origin", ["https://www.example.com", "http://127.0.0.1:8000", "https://x.test:8443"])
def test_origins_accepted(tmp_path, origin):
    """Planted bugs: every origin refused (the scheme test inverted, a scheme literal
    changed, ``not netloc`` inverted, strings treated as non-strings)."""
    assert c.from_mapping(_base(tmp_path, links={"allowed_origins": [origin]}))["links.allowed_origins"] == [origin]


@pytest.mark.parametrize("origin", [
    "ftp://www.example.com", "https://", "https://x.test/", "https://x.test/signup", "https://x.test?a=1",
    "https://x.test#top", " https://x.test", "https://x.test ", "www.example.com", 42, None,
])
def test_origins_refused_one_reason_at_a_time(tmp_path, origin):
    """Planted bugs: ``and`` for ``or`` between the path, query, fragment and whitespace
    tests (each alone must refuse), the scheme test needing a missing host too, a
    non-string passed to ``urlsplit``, the message changed or dropped."""
    assert _problems(_base(tmp_path, links={"allowed_origins": [origin]})) == [
        f'links.allowed_origins: {origin!r} is not an origin like "https://www.example.com"'
    ]


def test_trusted_proxies(tmp_path):
    """Planted bugs: strings refused as non-strings, ``strict=True`` (a network written
    with its host bits, ``10.1.2.3/8``, refused), the proxy not passed, the message
    changed or dropped."""
    good = ["127.0.0.1", "10.1.2.3/8", "::1", "fd00::/8"]
    assert c.from_mapping(_base(tmp_path, links={"trusted_proxies": good}))["links.trusted_proxies"] == good
    assert _problems(_base(tmp_path, links={"trusted_proxies": ["proxy.local", 7, "127.0.0.1"]})) == [
        "links.trusted_proxies: 'proxy.local' is not an IP address or network",
        "links.trusted_proxies: 7 is not an IP address or network",
    ]


CLEAR_SELL = ("sell.base_url: must start with https:// (the Sell token would cross the network "
              "in clear); http:// only for a loopback address (sellsim)")


@pytest.mark.parametrize("url, refused", [
    ("http://api.getbase.com", True), ("http://10.0.0.1:8080", True),
    ("http://[2001:db8::1]", True),
    ("http://127.0.0.1:9", False), ("http://[::1]:9", False), ("http://localhost:9", False),
    ("https://api.getbase.com", False), ("https://10.0.0.1", False),
])
def test_plain_http_sell_only_on_loopback(tmp_path, url, refused):
    """Issue 20 item 12: the token would travel in clear. Planted bugs: the http check
    dropped, loopback not exempted (sellsim refused), https refused too."""
    data = _base(tmp_path, sell={"base_url": url})
    if refused:
        assert _problems(data) == [CLEAR_SELL]
    else:
        assert c.from_mapping(data)["sell.base_url"] == url


def _clear_smtp(host: str) -> str:
    return (f'smtp.security: "none" with smtp.username set would send the SMTP password in clear '
            f'to smtp.host {host!r}; use "starttls" or "tls" ("none" only for a loopback relay)')


@pytest.mark.parametrize("smtp, refused", [
    ({"host": "mail.example.com", "security": "none", "username": "kuloo"}, True),
    ({"host": "10.1.2.3", "security": "none", "username": "kuloo"}, True),
    ({"host": "mail.example.com", "security": "none", "username": ""}, False),  # no password sent
    ({"host": "mail.example.com", "security": "starttls", "username": "kuloo"}, False),
    ({"host": "mail.example.com", "security": "tls", "username": "kuloo"}, False),
    ({"host": "127.0.0.1", "security": "none", "username": "kuloo"}, False),
    ({"host": "::1", "security": "none", "username": "kuloo"}, False),
    ({"host": "localhost", "security": "none", "username": "kuloo"}, False),
])
def test_an_smtp_password_never_travels_in_clear(tmp_path, smtp, refused):
    """Issue 20 item 15. Planted bugs: the check dropped, ``or`` for ``and`` (a relay
    without a username refused), loopback relays refused, the keys not named."""
    data = _base(tmp_path, smtp=smtp)
    if refused:
        assert _problems(data) == [_clear_smtp(smtp["host"])]
    else:
        assert c.from_mapping(data)["smtp.security"] == smtp["security"]
