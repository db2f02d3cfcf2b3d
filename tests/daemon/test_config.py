"""Configuration: every problem reported with its key; the example documents every key."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kuloo_daemon import config as c

ROOT = Path(__file__).resolve().parents[2]


def test_every_problem_is_listed_with_its_key():
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping(
            {
                "daemon": {"state_dir": 3, "shutdown_grace_seconds": -1, "colour": "blue"},
                "log": {"format": "xml", "level": True},
                "sell": {"base_url": "ftp://x", "requests_per_second": 50},
                "nonsense": 1,
            }
        )
    problems = err.value.problems
    for fragment in [
        "daemon.state_dir: expected a string",
        "daemon.shutdown_grace_seconds: -1 is below",
        "daemon.colour: unknown key",
        "log.format: 'xml' is not one of",
        "log.level: expected a string, got a boolean",
        "sell.base_url: must start with",
        "sell.requests_per_second: Sell allows 10 requests per second",
        "nonsense: expected a [nonsense] table",
    ]:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == 8


@pytest.mark.parametrize(
    "url, ok",
    [
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:80", True),
        ("http://localhost:1", True),
        ("https://api.getbase.com", False),
        ("https://10.0.0.1", False),
    ],
)
def test_a_raised_rate_and_a_test_cadence_only_against_loopback(url, ok):
    body = {"sell": {"base_url": url, "requests_per_second": 500}, "sync": {"cadence_seconds": 2}}
    if ok:
        cfg = c.from_mapping(body)
        assert cfg["sell.requests_per_second"] == 500 and cfg["sync.cadence_seconds"] == 2
    else:
        with pytest.raises(c.ConfigError) as err:
            c.from_mapping(body)
        assert [p.split(":")[0] for p in err.value.problems] == [
            "sell.requests_per_second",
            "sync.cadence_seconds",
        ]
    assert (
        c.from_mapping({"sell": {"base_url": url, "requests_per_second": 10}})[
            "sync.cadence_seconds"
        ]
        == 0
    )


def test_relative_paths_are_relative_to_the_file(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text('[daemon]\nstate_dir = "st"\n[control]\nsocket = "c.sock"\n')
    cfg = c.load(f)
    assert cfg.database_path == tmp_path / "st" / "kuloo.sqlite3"
    assert cfg["control.socket"] == str(tmp_path / "c.sock")


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(c.ConfigError, match="cannot read"):
        c.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    with pytest.raises(c.ConfigError, match="not valid TOML"):
        c.load(bad)


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["kuloo.example.toml", "demo.toml"])
def test_shipped_configs_are_valid(name):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kuloo_daemon.cli",
            "check-config",
            "--config",
            str(ROOT / "config" / name),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if name == "demo.toml":
        assert r.returncode == 0, r.stderr
    else:  # the example shows the defaults: the operator must still give the links' https address
        assert r.returncode == 2
        assert r.stderr.strip().endswith(
            "links.public_url: must be an https:// address when "
            'delivery.transport = "smtp" (it is in every unsubscribe link); '
            "empty or http:// only when smtp.host and sell.base_url are "
            "both loopback (tests)"
        ), r.stderr


def test_the_example_documents_every_key():
    text = (ROOT / "config" / "kuloo.example.toml").read_text()
    data = tomllib.loads(text)
    flat = {f"{s}.{k}" for s, body in data.items() for k in body}
    assert flat == set(c.KEYS)
    for s, body in data.items():
        for k, v in body.items():
            assert v == c.KEYS[f"{s}.{k}"].default, f"{s}.{k}: the example must show the default"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"


@pytest.mark.e2e
def test_check_config_command_exits_nonzero_and_names_keys(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text('[control]\nmax_line_bytes = "big"\n[sell]\ntimeout_seconds = 0\n')
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "check-config", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert (
        "2 problem(s)" in r.stderr
        and "control.max_line_bytes" in r.stderr
        and "sell.timeout_seconds" in r.stderr
    )


def test_credentials_are_read_from_files_never_from_toml(tmp_path, monkeypatch):
    (tmp_path / "link-signing-key").write_text("s3cret-key-material\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = c.from_mapping({})
    key = cfg.credential("link_signing_key")
    assert key.reveal() == "s3cret-key-material"
    assert "s3cret" not in repr(key)
    with pytest.raises(FileNotFoundError) as err:
        cfg.credential("smtp_password")
    assert "smtp-password" in str(err.value)


def test_clock_keys():
    assert c.from_mapping({})["clock.mode"] == "wall"
    cfg = c.from_mapping({"clock": {"mode": "manual", "start": "2026-01-05T09:00:00Z"}})
    assert (cfg["clock.mode"], cfg["clock.start"]) == ("manual", "2026-01-05T09:00:00Z")
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping({"clock": {"mode": "frozen", "start": "2026-01-05T09:00:00"}})
    assert any(p.startswith("clock.mode: 'frozen' is not one of") for p in err.value.problems)
    assert any(
        p.startswith("clock.start: must be an ISO 8601 time with its offset")
        for p in err.value.problems
    )
    with pytest.raises(c.ConfigError, match="clock.start"):
        c.from_mapping({"clock": {"start": "soon"}})


# ----------------------------------------------------------------------------- at the edges
# (formerly test_config_bounds.py)
# Configuration at its edges: every key's minimum and maximum, exactly and one step past,
# types, paths, and the problems reported instead of a crash (issue 14 item 9).
#
# The minimum checks were only caught by accident through a fixture; here every declared
# bound is checked directly, so a key added to KEYS is covered the day it lands.

BOUNDED = [
    (name, spec)
    for name, spec in c.KEYS.items()
    if spec.minimum is not None or spec.maximum is not None
]


def _mapping(name: str, value) -> dict:
    """One key set; Sell on loopback, as in the tests, so keys allowed only there pass."""
    section, key = name.split(".", 1)
    data: dict = {"sell": {"base_url": "http://127.0.0.1:9"}}
    data.setdefault(section, {})[key] = value
    return data


def _step(spec: c.Key) -> float:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    return 1 if float not in types else 0.001


def _problems(data: dict, path=None) -> list[str]:
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping(data, path)
    assert str(err.value) == "; ".join(err.value.problems)
    return err.value.problems


@pytest.mark.parametrize(("name", "spec"), BOUNDED, ids=[n for n, _ in BOUNDED])
def test_every_bound_is_inclusive_and_one_step_past_is_refused(name, spec):
    """Planted bugs: ``<=`` for ``<`` (the minimum itself refused), ``>=`` for ``>``, a
    bound check deleted, the message naming another bound."""
    if spec.minimum is not None:
        assert c.from_mapping(_mapping(name, spec.minimum))[name] == spec.minimum
        below = spec.minimum - _step(spec)
        assert _problems(_mapping(name, below)) == [
            f"{name}: {below!r} is below the minimum {spec.minimum}"
        ]
    if spec.maximum is not None:
        assert c.from_mapping(_mapping(name, spec.maximum))[name] == spec.maximum
        above = spec.maximum + _step(spec)
        assert _problems(_mapping(name, above)) == [
            f"{name}: {above!r} is above the maximum {spec.maximum}"
        ]


def test_defaults_are_valid_and_returned_for_absent_keys():
    """Planted bug: a default outside its own bounds or choices; defaults not applied."""
    cfg = c.from_mapping({})
    assert cfg.values == {name: spec.default for name, spec in c.KEYS.items()}
    for name, spec in c.KEYS.items():
        assert c._check(name, spec, spec.default) is None, name


def test_types_are_checked_before_bounds():
    """Planted bugs: booleans accepted as numbers, a float accepted for an integer key,
    the type names in the message changed."""
    assert _problems({"sell": {"timeout_seconds": True}}) == [
        "sell.timeout_seconds: expected a number, got a boolean"
    ]
    assert _problems({"sell": {"max_attempts": 2.5}}) == [
        "sell.max_attempts: expected a number, got float 2.5"
    ]
    assert _problems({"sell": {"max_attempts": "3"}}) == [
        "sell.max_attempts: expected a number, got str '3'"
    ]
    assert _problems({"log": {"level": 1}}) == ["log.level: expected a string, got int 1"]
    assert _problems({"log": {"level": "verbose"}}) == [
        "log.level: 'verbose' is not one of 'debug', 'info', 'warning', 'error'"
    ]
    assert c.from_mapping({"sell": {"timeout_seconds": 2}})["sell.timeout_seconds"] == 2


def test_a_wrong_value_is_reported_not_crashed_on():
    """Planted bug: a refused value kept (not replaced by the default), so the socket
    length check crashes with a TypeError on ``control.socket = 5``."""
    assert _problems({"control": {"socket": 5}}) == ["control.socket: expected a string, got int 5"]


def test_socket_path_length_edge():
    """Planted bug: ``>= 107`` (a path of exactly 107 bytes refused) or the check deleted."""
    base = "/tmp/"
    ok = base + "s" * (107 - len(base))
    assert c.from_mapping({"control": {"socket": ok}})["control.socket"] == ok
    assert _problems({"control": {"socket": ok + "x"}}) == [
        "control.socket: path is longer than the 107 bytes a Unix socket allows"
    ]
    # bytes, not characters
    multibyte = base + "é" * 51  # 5 + 102 bytes
    assert len(os.fsencode(multibyte)) == 107
    assert c.from_mapping({"control": {"socket": multibyte}})["control.socket"] == multibyte


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "https://api.getbase.com"])
def test_base_url_schemes(url):
    """Planted bug: one of the two schemes dropped from the check."""
    assert c.from_mapping({"sell": {"base_url": url}})["sell.base_url"] == url


def test_unknown_keys_suggest_the_known_one():
    """Planted bugs: no suggestion for a dashed or differently cased key, or for a key
    put in the wrong section."""
    assert _problems({"daemon": {"State-Dir": "/x"}}) == [
        "daemon.State-Dir: unknown key (did you mean 'daemon.state_dir'?)"
    ]
    assert _problems({"sell": {"socket": "/x"}}) == [
        "sell.socket: unknown key (did you mean 'control.socket'?)"
    ]
    assert _problems({"sell": {"colour": "blue"}}) == ["sell.colour: unknown key"]


def test_paths_relative_to_the_file_and_absolute_ones_kept(tmp_path):
    """Planted bugs: credentials.directory not resolved against the file, an absolute
    path rewritten, an empty directory turned into the file's folder."""
    f = tmp_path / "etc" / "kuloo.toml"
    f.parent.mkdir()
    f.write_text(
        '[daemon]\nstate_dir = "/var/lib/k"\n[credentials]\ndirectory = "creds"\n'
        '[control]\nsocket = "/run/k/c.sock"\n[store]\ndatabase = "/srv/db.sqlite3"\n'
    )
    cfg = c.load(f)
    assert cfg["credentials.directory"] == str(tmp_path / "etc" / "creds")
    assert cfg["daemon.state_dir"] == "/var/lib/k" and cfg["control.socket"] == "/run/k/c.sock"
    assert cfg.database_path == Path("/srv/db.sqlite3")  # an absolute database wins
    g = tmp_path / "etc" / "other.toml"
    g.write_text('[daemon]\nstate_dir = "/var/lib/k"\n')
    cfg = c.load(g)
    assert cfg["credentials.directory"] == "" and cfg.database_path == Path(
        "/var/lib/k/kuloo.sqlite3"
    )


def test_credentials_come_from_the_configured_folder_first(tmp_path, monkeypatch):
    """Planted bugs: ``$CREDENTIALS_DIRECTORY`` winning over the configured folder, or
    not used when none is configured."""
    mine, systemd = tmp_path / "mine", tmp_path / "systemd"
    for folder, value in ((mine, "configured"), (systemd, "from-systemd")):
        folder.mkdir()
        (folder / "link-signing-key").write_text(value + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(systemd))
    assert (
        c.from_mapping({"credentials": {"directory": str(mine)}})
        .credential("link_signing_key")
        .reveal()
        == "configured"
    )
    assert c.from_mapping({}).credential("link_signing_key").reveal() == "from-systemd"
    assert c.from_mapping({}).credentials_dir() == str(systemd)


def test_a_file_that_is_not_utf8_is_reported(tmp_path):
    """Planted bug: the decode error not caught (a traceback instead of a problem)."""
    f = tmp_path / "k.toml"
    f.write_bytes(b'[log]\nlevel = "\xff"\n')
    with pytest.raises(c.ConfigError, match="not valid TOML"):
        c.load(f)


def test_every_section_is_checked_after_a_bad_one():
    """Planted bugs: ``break`` after a section that is not a table (the rest unchecked),
    another joiner in the error's text."""
    problems = _problems({"nonsense": 1, "log": {"level": "loud"}})
    assert problems == [
        "nonsense: expected a [nonsense] table",
        "log.level: 'loud' is not one of 'debug', 'info', 'warning', 'error'",
    ]


def test_relative_paths_stay_relative_without_a_file():
    """Planted bugs: ``or`` for ``and`` in the path rules (no file to resolve against:
    a crash on ``None.parent``)."""
    cfg = c.from_mapping(
        {
            "daemon": {"state_dir": "st"},
            "control": {"socket": "c.sock"},
            "credentials": {"directory": "cr"},
        }
    )
    assert (cfg["daemon.state_dir"], cfg["control.socket"], cfg["credentials.directory"]) == (
        "st",
        "c.sock",
        "cr",
    )
    assert cfg.path is None


def test_a_loaded_config_knows_its_file(tmp_path):
    """Planted bug: ``Config(path=None)`` (SIGHUP could not re-read the file)."""
    f = tmp_path / "k.toml"
    f.write_text("")
    assert c.load(f).path == f.resolve()


def test_base_url_refusal_text():
    """Planted bug: the message changed (operators grep for the key name)."""
    assert _problems({"sell": {"base_url": "api.getbase.com"}}) == [
        "sell.base_url: must start with http:// or https://"
    ]


def test_type_names_in_messages():
    """Planted bugs: the wording for booleans, mixed types or unnamed types changed (no
    key has such a type today; the next one will)."""
    assert (
        c._check("x.flag", c.Key(bool, False, "d"), "yes")
        == "x.flag: expected true or false, got str 'yes'"
    )
    assert (
        c._check("x.mixed", c.Key((str, int), "", "d"), 1.5)
        == "x.mixed: expected a number or a string, got float 1.5"
    )
    assert c._check("x.list", c.Key(list, [], "d"), "a") == "x.list: expected list, got str 'a'"
    assert c._check("x.flag", c.Key(bool, False, "d"), True) is None


# ----------------------------------------------------------------------------- at the edges
# (formerly test_config_checks.py)
# The cross-key checks of the configuration, in process and with their exact texts.
#
# The section after this one proves the refusals through ``check-config`` and ``run`` as
# subprocesses, as an operator meets them; a subprocess imports the checkout, not a
# mutated copy, so those tests cannot tell a working check from a broken one under
# ``make mutate``. These call ``from_mapping`` directly (real files and a real symlink
# where a path is judged) and compare whole messages. Each test names the bugs planted
# against it (mutation survivors of issue 14), each of which made it fail.

SYSTEM_TAIL = ", in the system folder /etc; keep it under daemon.state_dir"


def _base(tmp: Path, **sections) -> dict:
    data: dict = {
        "daemon": {"state_dir": str(tmp / "state")},
        "control": {"socket": str(tmp / "c.sock")},
    }
    for section, body in sections.items():
        data.setdefault(section, {}).update(body)
    return data


def _check_problems(data: dict, path: Path | None = None) -> list[str]:
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping(data, path)
    return err.value.problems


@pytest.mark.parametrize(
    "database, problem",
    [
        (":memory:", "':memory:' must be a file name, not a special SQLite name"),
        (
            "file:x.sqlite3?mode=memory",
            "'file:x.sqlite3?mode=memory' must be a file name, not a special SQLite name",
        ),
        ("db/", "'db/' must be a file name, not a folder"),
        (".", "'.' must be a file name, not a folder"),
        ("..", "'..' must be a file name, not a folder"),
        ("../x.sqlite3", "'../x.sqlite3' must stay inside daemon.state_dir (no '..')"),
        ("sub/../x.sqlite3", "'sub/../x.sqlite3' must stay inside daemon.state_dir (no '..')"),
        ("/etc/passwd", "'/etc/passwd'" + SYSTEM_TAIL),
        ("/etc", "'/etc'" + SYSTEM_TAIL),
    ],
)
def test_database_refusals_say_exactly_why(tmp_path, database, problem):
    """Planted bugs: ``and`` for ``or`` between the special-name tests and between the
    folder tests, the ``'.'``/``'..'``/``'/'``/``file:`` literals changed, the ``'..'``
    test inverted or applied to absolute paths, the system-folder test needing both an
    exact and a prefix match, the check's result dropped by ``from_mapping``."""
    assert _check_problems(_base(tmp_path, store={"database": database})) == [
        f"store.database: {problem}"
    ]


@pytest.mark.parametrize(
    "database",
    [
        "kuloo.sqlite3",
        "db/kuloo.sqlite3",
        "/srv/kuloo/../kuloo/k.sqlite3",
        "/var/lib/kuloo/other.sqlite3",
        "/etcetera/k.sqlite3",
        "..k.sqlite3",
    ],
)
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
    assert _check_problems(data) == ["store.database: '/etc/kuloo/kuloo.sqlite3'" + SYSTEM_TAIL]


def test_a_symlink_into_a_system_folder_is_named_with_where_it_leads(tmp_path):
    """Planted bugs: the message always in the direct form or always in the "leads to"
    form, or naming ``None`` instead of the configured path."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "sys").symlink_to("/etc")
    problems = _check_problems(_base(tmp_path, store={"database": "sys/kuloo.sqlite3"}))
    assert problems == [
        f"store.database: '{state}/sys/kuloo.sqlite3' leads to '/etc/kuloo.sqlite3'" + SYSTEM_TAIL
    ]


def test_an_empty_control_socket_is_refused_with_its_text(tmp_path):
    """Planted bug: the message changed or dropped (the subprocess test cannot see it)."""
    data = _base(tmp_path)
    data["control"]["socket"] = "  "
    assert _check_problems(data) == [
        "control.socket: must not be empty (a path such as /run/kuloo/control.sock)"
    ]


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://links.example.com", True),
        ("http://127.0.0.1:8080", True),
        ("ftp://links.example.com", False),
        ("links.example.com", False),
        ("HTTPS://x.test", False),
    ],
)
def test_public_url_schemes(tmp_path, url, ok):
    """Planted bugs: the scheme test inverted, a scheme literal changed, the message
    changed or dropped."""
    data = _base(tmp_path, links={"public_url": url})
    if ok:
        assert c.from_mapping(data)["links.public_url"] == url
    else:
        assert _check_problems(data) == [
            "links.public_url: must start with https:// (or http:// for tests)"
        ]


def test_maildir_transport_needs_a_folder(tmp_path):
    """Planted bugs: the transport literal changed, the folder test inverted, the
    message changed or dropped."""
    assert _check_problems(_base(tmp_path, delivery={"transport": "maildir"})) == [
        'delivery.maildir: required when delivery.transport = "maildir"'
    ]
    config = c.from_mapping(
        _base(tmp_path, delivery={"transport": "maildir", "maildir": str(tmp_path / "md")})
    )
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
    assert (
        c.from_mapping(_base(tmp_path, sell={**real, "requests_per_second": 10}))[
            "sell.requests_per_second"
        ]
        == 10
    )
    assert _check_problems(_base(tmp_path, sell={**real, "requests_per_second": 10.5})) == [
        "sell.requests_per_second: Sell allows 10 requests per second; more is only accepted for a "
        "loopback sell.base_url (sellsim)"
    ]
    assert _check_problems(_base(tmp_path, sell=real, sync={"cadence_seconds": 5})) == [
        "sync.cadence_seconds: only for tests against a loopback sell.base_url (sellsim); real "
        "channels sync at their plan's cadence"
    ]


@pytest.mark.parametrize(
    "url, loopback",
    [
        ("http://127.0.0.1:9", True),
        ("http://[::1]:9", True),
        ("http://localhost:9", True),
        ("https://api.getbase.com", False),
        ("http://[::1", False),
        ("http://10.0.0.1", False),
        ("http://", False),
    ],
)
def test_loopback_urls(url, loopback):
    """Planted bug: a URL that cannot be parsed (``http://[::1``) counted as loopback,
    which would let a raised rate through against whatever it names."""
    assert c.is_loopback_url(url) is loopback


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
        ("[::1:8080", ("[::1", 8080)),  # only a bracketed host is unwrapped
        ("h]:1", ("h]", 1)),
    ],
)
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
    assert _check_problems(_base(tmp_path, links={"listen": text})) == [
        f"links.listen: {text!r} is not HOST:PORT (port 0 to 65535)"
    ]


@pytest.mark.parametrize(
    "origin", ["https://www.example.com", "http://127.0.0.1:8000", "https://x.test:8443"]
)
def test_origins_accepted(tmp_path, origin):
    """Planted bugs: every origin refused (the scheme test inverted, a scheme literal
    changed, ``not netloc`` inverted, strings treated as non-strings)."""
    assert c.from_mapping(_base(tmp_path, links={"allowed_origins": [origin]}))[
        "links.allowed_origins"
    ] == [origin]


@pytest.mark.parametrize(
    "origin",
    [
        "ftp://www.example.com",
        "https://",
        "https://x.test/",
        "https://x.test/signup",
        "https://x.test?a=1",
        "https://x.test#top",
        " https://x.test",
        "https://x.test ",
        "www.example.com",
        42,
        None,
    ],
)
def test_origins_refused_one_reason_at_a_time(tmp_path, origin):
    """Planted bugs: ``and`` for ``or`` between the path, query, fragment and whitespace
    tests (each alone must refuse), the scheme test needing a missing host too, a
    non-string passed to ``urlsplit``, the message changed or dropped."""
    assert _check_problems(_base(tmp_path, links={"allowed_origins": [origin]})) == [
        f'links.allowed_origins: {origin!r} is not an origin like "https://www.example.com"'
    ]


def test_trusted_proxies(tmp_path):
    """Planted bugs: strings refused as non-strings, ``strict=True`` (a network written
    with its host bits, ``10.1.2.3/8``, refused), the proxy not passed, the message
    changed or dropped."""
    good = ["127.0.0.1", "10.1.2.3/8", "::1", "fd00::/8"]
    assert (
        c.from_mapping(_base(tmp_path, links={"trusted_proxies": good}))["links.trusted_proxies"]
        == good
    )
    assert _check_problems(
        _base(tmp_path, links={"trusted_proxies": ["proxy.local", 7, "127.0.0.1"]})
    ) == [
        "links.trusted_proxies: 'proxy.local' is not an IP address or network",
        "links.trusted_proxies: 7 is not an IP address or network",
    ]


# ----------------------------------------------------------------------------- at the edges
# (formerly test_config_limits.py)
# Configuration values that pass a naive range check but would break the daemon later.
#
# NaN compares false with every bound, so ``nan`` (and ``inf``) slipped through for every
# numeric key; an empty control socket and a database in a system folder are refused too.
# Each case is tried through ``check-config`` and ``run`` as subprocesses, as an operator would.

NUMERIC = [
    name for name, key in c.KEYS.items() if key.minimum is not None or key.maximum is not None
]


def _cli(command: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", command, "--config", path],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _write(folder: str, body: str) -> str:
    path = os.path.join(folder, "k.toml")
    with open(path, "w") as f:
        f.write(
            f'[daemon]\nstate_dir = "{folder}/state"\n[control]\nsocket = "{folder}/c.sock"\n{body}'
        )
    return path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_numeric_key_refuses_non_finite_numbers(value):
    assert len(NUMERIC) >= 8
    data: dict = {}
    for name in NUMERIC:
        section, key = name.split(".")
        data.setdefault(section, {})[key] = float(value)
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping(data)
    problems = err.value.problems
    assert len(problems) == len(NUMERIC), problems
    for name in NUMERIC:
        assert any(p.startswith(f"{name}: ") and "is not a finite number" in p for p in problems), (
            name,
            problems,
        )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "key, value",
    [
        ("daemon.scheduler_tick_seconds", "nan"),
        ("daemon.shutdown_grace_seconds", "nan"),
        ("sell.requests_per_second", "nan"),
        ("sell.timeout_seconds", "inf"),
    ],
)
def test_run_and_check_config_refuse_nan_before_starting(short_tmp, key, value):
    section, name = key.split(".")
    path = os.path.join(short_tmp, "k.toml")
    tables = {
        "daemon": f'state_dir = "{short_tmp}/state"\n',
        "control": f'socket = "{short_tmp}/c.sock"\n',
        section: "",
    }
    tables[section] += f"{name} = {value}\n"
    with open(path, "w") as f:
        f.write("".join(f"[{t}]\n{body}" for t, body in tables.items()))
    for command in ("check-config", "run"):
        r = _cli(command, path)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert f"{key}: {value} is not a finite number" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(short_tmp, "state")), (
        "nothing may start with a refused config"
    )


@pytest.mark.e2e
def test_an_empty_control_socket_is_refused(short_tmp):
    path = os.path.join(short_tmp, "k.toml")
    with open(path, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{short_tmp}/state"\n[control]\nsocket = ""\n')
    r = _cli("check-config", path)
    assert r.returncode == 2 and "control.socket: must not be empty" in r.stderr, r.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "database, why",
    [
        ("/etc/passwd", "system folder"),
        ("/etc/kuloo/kuloo.sqlite3", "system folder"),
        ("/proc/self/environ", "system folder"),
        ("/dev/null", "system folder"),
        ("/sys/kernel/x.sqlite3", "system folder"),
        ("/usr/lib/kuloo.sqlite3", "system folder"),
        ("../../etc/passwd", "inside daemon.state_dir"),
        ("sub/../../x.sqlite3", "inside daemon.state_dir"),
        (":memory:", "file name"),
        ("file:x.sqlite3?mode=memory", "file name"),
        ("db/", "file name"),
        ("/", "file name"),
    ],
)
def test_the_database_must_be_in_a_sensible_place(short_tmp, database, why):
    path = _write(short_tmp, f'[store]\ndatabase = "{database}"\n')
    r = _cli("check-config", path)
    assert r.returncode == 2, r.stdout
    assert "store.database: " in r.stderr and why in r.stderr, r.stderr


@pytest.mark.e2e
def test_a_state_dir_in_a_system_folder_is_refused(short_tmp):
    path = os.path.join(short_tmp, "k.toml")
    with open(path, "w") as f:
        f.write(f'[daemon]\nstate_dir = "/etc"\n[control]\nsocket = "{short_tmp}/c.sock"\n')
    r = _cli("check-config", path)
    assert r.returncode == 2 and "/etc/kuloo.sqlite3" in r.stderr and "system folder" in r.stderr, (
        r.stderr
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "database",
    [
        "kuloo.sqlite3",
        "db/kuloo.sqlite3",
        "/srv/kuloo/kuloo.sqlite3",
        "/var/lib/kuloo/other.sqlite3",
    ],
)
def test_sensible_database_places_are_accepted_by_check_config(short_tmp, database):
    r = _cli(
        "check-config",
        _write(
            short_tmp,
            f'[store]\ndatabase = "{database}"\n'
            '[links]\npublic_url = "https://links.example.com"\n',
        ),
    )
    assert r.returncode == 0, r.stderr


def test_sell_max_response_bytes_is_a_whole_number_of_bytes_within_bounds():
    """``[sell] max_response_bytes``: 16 MiB of decoded body unless set; a finite, positive
    whole number between 1 MiB and 256 MiB. Planted bugs: another default; a float or a
    boolean accepted; a bound dropped."""
    key = "sell.max_response_bytes"
    assert c.from_mapping({})[key] == 16 * 1024 * 1024
    assert c.from_mapping({"sell": {"max_response_bytes": 5_000_000}})[key] == 5_000_000
    for value, problem in [
        (16e6, "expected a number, got float 16000000.0"),
        (float("inf"), "inf is not a finite number"),
        (float("nan"), "nan is not a finite number"),
        (True, "expected a number, got a boolean"),
        ("16MiB", "expected a number, got str '16MiB'"),
        (0, "0 is below the minimum 1048576"),
        (-1, "-1 is below the minimum 1048576"),
        (2**40, "1099511627776 is above the maximum 268435456"),
    ]:
        assert _problems({"sell": {"max_response_bytes": value}}) == [f"{key}: {problem}"], value


async def test_sell_max_response_bytes_reaches_every_sell_client(services_config):
    """Planted bug: the key read but not handed to the client pool (16 MiB whatever is set)."""
    from kuloo_daemon.secrets import Secret
    from kuloo_daemon.services import open_services

    config = services_config(
        sell={"base_url": "http://127.0.0.1:9", "max_response_bytes": 2_000_000}
    )
    async with open_services(config) as services:
        sell = await services.sell_pool.client(Secret("t" * 64))
        assert sell.max_response_bytes == 2_000_000


CLEAR_SELL = (
    "sell.base_url: must start with https:// (the Sell token would cross the network "
    "in clear); http:// only for a loopback address (sellsim)"
)


@pytest.mark.parametrize(
    "url, refused",
    [
        ("http://api.getbase.com", True),
        ("http://10.0.0.1:8080", True),
        ("http://[2001:db8::1]", True),
        ("http://127.0.0.1:9", False),
        ("http://[::1]:9", False),
        ("http://localhost:9", False),
        ("https://api.getbase.com", False),
        ("https://10.0.0.1", False),
    ],
)
def test_plain_http_sell_only_on_loopback(tmp_path, url, refused):
    """Issue 20 item 12: the token would travel in clear. Planted bugs: the http check
    dropped, loopback not exempted (sellsim refused), https refused too."""
    data = _base(tmp_path, sell={"base_url": url})
    if refused:
        assert _check_problems(data) == [CLEAR_SELL]
    else:
        assert c.from_mapping(data)["sell.base_url"] == url


def _clear_smtp(host: str) -> str:
    return (
        f'smtp.security: "none" with smtp.username set would send the SMTP password in clear '
        f'to smtp.host {host!r}; use "starttls" or "tls" ("none" only for a loopback relay)'
    )


@pytest.mark.parametrize(
    "smtp, refused",
    [
        ({"host": "mail.example.com", "security": "none", "username": "kuloo"}, True),
        ({"host": "10.1.2.3", "security": "none", "username": "kuloo"}, True),
        (
            {"host": "mail.example.com", "security": "none", "username": ""},
            False,
        ),  # no password sent
        ({"host": "mail.example.com", "security": "starttls", "username": "kuloo"}, False),
        ({"host": "mail.example.com", "security": "tls", "username": "kuloo"}, False),
        ({"host": "127.0.0.1", "security": "none", "username": "kuloo"}, False),
        ({"host": "::1", "security": "none", "username": "kuloo"}, False),
        ({"host": "localhost", "security": "none", "username": "kuloo"}, False),
    ],
)
def test_an_smtp_password_never_travels_in_clear(tmp_path, smtp, refused):
    """Issue 20 item 15. Planted bugs: the check dropped, ``or`` for ``and`` (a relay
    without a username refused), loopback relays refused, the keys not named."""
    data = _base(tmp_path, smtp=smtp)
    if refused:
        assert _check_problems(data) == [_clear_smtp(smtp["host"])]
    else:
        assert c.from_mapping(data)["smtp.security"] == smtp["security"]


@pytest.mark.parametrize(
    "body, key",
    [
        (
            '[sell]\nbase_url = "http://api.getbase.com"\n',
            "sell.base_url: must start with https://",
        ),
        (
            '[smtp]\nhost = "mail.example.com"\nsecurity = "none"\nusername = "kuloo"\n',
            'smtp.security: "none" with smtp.username set',
        ),
    ],
)
def test_run_and_check_config_refuse_secrets_in_clear(short_tmp, body, key):
    """Issue 20 items 12 and 15, as an operator meets them: neither command starts."""
    path = _write(short_tmp, body)
    for command in ("check-config", "run"):
        r = _cli(command, path)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert key in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(short_tmp, "state")), "nothing may start"


def test_sell_web_url_defaults_to_the_real_web_app_and_must_be_http():
    """Issue 24 item 10: record links are built on ``[sell] web_url`` (the demo: sellsim).
    Planted bug: the check removed (``javascript:`` accepted)."""
    assert c.from_mapping({})["sell.web_url"] == "https://app.futuresimple.com"
    assert c.from_mapping({"sell": {"web_url": "http://127.0.0.1:1/_sim/web"}})["sell.web_url"]
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping({"sell": {"web_url": "javascript:alert(1)"}})
    assert [p.split(":")[0] for p in err.value.problems] == ["sell.web_url"]


HTTPS_REFUSAL = 'links.public_url: must be an https:// address when delivery.transport = "smtp"'


@pytest.mark.parametrize(
    "body, refused",
    [
        ("", True),  # empty public_url, a real relay (localhost) but the real Sell
        ('[links]\npublic_url = "http://links.example.com"\n', True),
        (
            '[links]\npublic_url = "http://links.example.com"\n[sell]\nbase_url = "http://127.0.0.1:9"\n'
            '[smtp]\nhost = "mail.example.com"\n',
            True,
        ),  # a real relay: no exception for tests
        ('[sell]\nbase_url = "http://127.0.0.1:9"\n', False),  # both loopback (tests)
        (
            '[links]\npublic_url = "http://links.test"\n[sell]\nbase_url = "http://[::1]:9"\n'
            '[smtp]\nhost = "127.0.0.1"\n',
            False,
        ),
        ('[links]\npublic_url = "https://links.example.com"\n', False),
        ('[delivery]\ntransport = "maildir"\nmaildir = "md"\n', False),  # nothing leaves
    ],
)
def test_smtp_mail_links_to_https_unless_everything_is_loopback(short_tmp, body, refused):
    """Issue 25 item 6. Planted bugs: the transport test dropped, "https://" changed to
    "http", one loopback test dropped (either), the check not called by run."""
    path = _write(short_tmp, body)
    if not refused:
        r = _cli("check-config", path)
        assert r.returncode == 0, r.stderr
        return
    for command in ("check-config", "run"):
        r = _cli(command, path)
        assert r.returncode == 2, (command, r.stderr)
        assert HTTPS_REFUSAL in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(short_tmp, "state")), "nothing may start"


def test_the_bounce_mailbox_settings_are_checked(tmp_path):
    """[bounces]: a domain needs exactly one mailbox, under [dkim] domain when that is set;
    an imap_url only over TLS with no password; a ca_file beside the config file that
    exists."""
    (tmp_path / "ca.pem").write_text("pem")
    f = tmp_path / "k.toml"
    f.write_text(
        '[bounces]\ndomain = "bounces.example.com"\n'
        'imap_url = "imaps://bounces@imap.example.com/INBOX"\nca_file = "ca.pem"\n'
    )
    cfg = c.load(f)
    assert cfg["bounces.ca_file"] == str(tmp_path / "ca.pem")
    assert c.parse_imap_url(cfg["bounces.imap_url"]) == c.ImapUrl(
        "bounces", "imap.example.com", 993, "INBOX"
    )
    bad = {
        "bounces": {
            "domain": "bounces.other.example",
            "maildir": "m",
            "imap_url": "imap://u:secret@h/INBOX",
            "ca_file": "missing.pem",
        },
        "dkim": {"domain": "example.com", "selector": "k1"},
    }
    with pytest.raises(c.ConfigError) as caught:
        c.from_mapping(bad, tmp_path / "k.toml")
    text = "; ".join(caught.value.problems)
    assert "must be dkim.domain or under it" in text
    assert "needs exactly one of bounces.maildir and bounces.imap_url" in text
    assert "bounces.imap_url: must start with imaps://" in text
    assert "bounces.ca_file: no such file" in text
    assert "secret" not in text
    with pytest.raises(c.ConfigError, match="bounces.maildir: needs bounces.domain"):
        c.from_mapping({"bounces": {"maildir": "m"}})
