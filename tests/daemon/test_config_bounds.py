"""Configuration at its edges: every key's minimum and maximum, exactly and one step past,
types, paths, and the problems reported instead of a crash (issue 14 item 9).

The minimum checks were only caught by accident through a fixture; here every declared
bound is checked directly, so a key added to KEYS is covered the day it lands.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kuloo_daemon import config as c

BOUNDED = [(name, spec) for name, spec in c.KEYS.items() if spec.minimum is not None or spec.maximum is not None]


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
        assert _problems(_mapping(name, below)) == [f"{name}: {below!r} is below the minimum {spec.minimum}"]
    if spec.maximum is not None:
        assert c.from_mapping(_mapping(name, spec.maximum))[name] == spec.maximum
        above = spec.maximum + _step(spec)
        assert _problems(_mapping(name, above)) == [f"{name}: {above!r} is above the maximum {spec.maximum}"]


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
        "sell.timeout_seconds: expected a number, got a boolean"]  # fmt: skip
    assert _problems({"sell": {"max_attempts": 2.5}}) == [
        "sell.max_attempts: expected a number, got float 2.5"]  # fmt: skip
    assert _problems({"sell": {"max_attempts": "3"}}) == [
        "sell.max_attempts: expected a number, got str '3'"]  # fmt: skip
    assert _problems({"log": {"level": 1}}) == ["log.level: expected a string, got int 1"]
    assert _problems({"log": {"level": "verbose"}}) == [
        "log.level: 'verbose' is not one of 'debug', 'info', 'warning', 'error'"]  # fmt: skip
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
        "control.socket: path is longer than the 107 bytes a Unix socket allows"]  # fmt: skip
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
        "daemon.State-Dir: unknown key (did you mean 'daemon.state_dir'?)"]  # fmt: skip
    assert _problems({"sell": {"socket": "/x"}}) == [
        "sell.socket: unknown key (did you mean 'control.socket'?)"]  # fmt: skip
    assert _problems({"sell": {"colour": "blue"}}) == ["sell.colour: unknown key"]


def test_paths_relative_to_the_file_and_absolute_ones_kept(tmp_path):
    """Planted bugs: credentials.directory not resolved against the file, an absolute
    path rewritten, an empty directory turned into the file's folder."""
    f = tmp_path / "etc" / "kuloo.toml"
    f.parent.mkdir()
    f.write_text('[daemon]\nstate_dir = "/var/lib/k"\n[credentials]\ndirectory = "creds"\n'
                 '[control]\nsocket = "/run/k/c.sock"\n[store]\ndatabase = "/srv/db.sqlite3"\n')  # fmt: skip
    cfg = c.load(f)
    assert cfg["credentials.directory"] == str(tmp_path / "etc" / "creds")
    assert cfg["daemon.state_dir"] == "/var/lib/k" and cfg["control.socket"] == "/run/k/c.sock"
    assert cfg.database_path == Path("/srv/db.sqlite3")  # an absolute database wins
    g = tmp_path / "etc" / "other.toml"
    g.write_text('[daemon]\nstate_dir = "/var/lib/k"\n')
    cfg = c.load(g)
    assert cfg["credentials.directory"] == "" and cfg.database_path == Path("/var/lib/k/kuloo.sqlite3")


def test_credentials_come_from_the_configured_folder_first(tmp_path, monkeypatch):
    """Planted bugs: ``$CREDENTIALS_DIRECTORY`` winning over the configured folder, or
    not used when none is configured."""
    mine, systemd = tmp_path / "mine", tmp_path / "systemd"
    for folder, value in ((mine, "configured"), (systemd, "from-systemd")):
        folder.mkdir()
        (folder / "link-signing-key").write_text(value + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(systemd))
    assert c.from_mapping({"credentials": {"directory": str(mine)}}).credential("link_signing_key").reveal() == "configured"
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
    assert problems == ["nonsense: expected a [nonsense] table",
                        "log.level: 'loud' is not one of 'debug', 'info', 'warning', 'error'"]  # fmt: skip


def test_relative_paths_stay_relative_without_a_file():
    """Planted bugs: ``or`` for ``and`` in the path rules (no file to resolve against:
    a crash on ``None.parent``)."""
    cfg = c.from_mapping({"daemon": {"state_dir": "st"}, "control": {"socket": "c.sock"},
                          "credentials": {"directory": "cr"}})  # fmt: skip
    assert (cfg["daemon.state_dir"], cfg["control.socket"], cfg["credentials.directory"]) == ("st", "c.sock", "cr")
    assert cfg.path is None


def test_a_loaded_config_knows_its_file(tmp_path):
    """Planted bug: ``Config(path=None)`` (SIGHUP could not re-read the file)."""
    f = tmp_path / "k.toml"
    f.write_text("")
    assert c.load(f).path == f.resolve()


def test_base_url_refusal_text():
    """Planted bug: the message changed (operators grep for the key name)."""
    assert _problems({"sell": {"base_url": "api.getbase.com"}}) == [
        "sell.base_url: must start with http:// or https://"]  # fmt: skip


def test_type_names_in_messages():
    """Planted bugs: the wording for booleans, mixed types or unnamed types changed (no
    key has such a type today; the next one will)."""
    assert c._check("x.flag", c.Key(bool, False, "d"), "yes") == "x.flag: expected true or false, got str 'yes'"
    assert c._check("x.mixed", c.Key((str, int), "", "d"), 1.5) == "x.mixed: expected a number or a string, got float 1.5"
    assert c._check("x.list", c.Key(list, [], "d"), "a") == "x.list: expected list, got str 'a'"
    assert c._check("x.flag", c.Key(bool, False, "d"), True) is None


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

    config = services_config(sell={"base_url": "http://127.0.0.1:9", "max_response_bytes": 2_000_000})
    async with open_services(config) as services:
        sell = await services.sell_pool.client(Secret("t" * 64))
        assert sell.max_response_bytes == 2_000_000
