"""Configuration: every problem reported with its key; the example documents every key."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kuloo_daemon import config as c

ROOT = Path(__file__).resolve().parents[2]


def test_every_problem_is_listed_with_its_key():
    with pytest.raises(c.ConfigError) as err:
        c.from_mapping({
            "daemon": {"state_dir": 3, "shutdown_grace_seconds": -1, "colour": "blue"},
            "log": {"format": "xml", "level": True},
            "sell": {"base_url": "ftp://x", "requests_per_second": 50},
            "nonsense": 1,
        })
    problems = err.value.problems
    for fragment in ["daemon.state_dir: expected a string", "daemon.shutdown_grace_seconds: -1 is below",
                     "daemon.colour: unknown key", "log.format: 'xml' is not one of", "log.level: expected a string, got a boolean",
                     "sell.base_url: must start with", "sell.requests_per_second: Sell allows 10 requests per second",
                     "nonsense: expected a [nonsense] table"]:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == 8


@pytest.mark.parametrize("url, ok", [("http://127.0.0.1:8080", True), ("http://[::1]:80", True),
                                     ("http://localhost:1", True), ("https://api.getbase.com", False),
                                     ("https://10.0.0.1", False)])
def test_a_raised_rate_and_a_test_cadence_only_against_loopback(url, ok):
    body = {"sell": {"base_url": url, "requests_per_second": 500}, "sync": {"cadence_seconds": 2}}
    if ok:
        cfg = c.from_mapping(body)
        assert cfg["sell.requests_per_second"] == 500 and cfg["sync.cadence_seconds"] == 2
    else:
        with pytest.raises(c.ConfigError) as err:
            c.from_mapping(body)
        assert [p.split(":")[0] for p in err.value.problems] == ["sell.requests_per_second", "sync.cadence_seconds"]
    assert c.from_mapping({"sell": {"base_url": url, "requests_per_second": 10}})["sync.cadence_seconds"] == 0


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


@pytest.mark.parametrize("name", ["kuloo.example.toml", "demo.toml"])
def test_shipped_configs_are_valid(name):
    r = subprocess.run([sys.executable, "-m", "kuloo_daemon.cli", "check-config", "--config", str(ROOT / "config" / name)],
                       capture_output=True, text=True, timeout=30)
    if name == "demo.toml":
        assert r.returncode == 0, r.stderr
    else:  # the example shows the defaults: the operator must still give the links' https address
        assert r.returncode == 2
        assert r.stderr.strip().endswith("links.public_url: must be an https:// address when "
                                         'delivery.transport = "smtp" (it is in every unsubscribe link); '
                                         "empty or http:// only when smtp.host and sell.base_url are "
                                         "both loopback (tests)"), r.stderr


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


def test_check_config_command_exits_nonzero_and_names_keys(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text('[control]\nmax_line_bytes = "big"\n[sell]\ntimeout_seconds = 0\n')
    r = subprocess.run([sys.executable, "-m", "kuloo_daemon.cli", "check-config", "--config", str(f)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "2 problem(s)" in r.stderr and "control.max_line_bytes" in r.stderr and "sell.timeout_seconds" in r.stderr


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
    assert any(p.startswith("clock.start: must be an ISO 8601 time with its offset") for p in err.value.problems)
    with pytest.raises(c.ConfigError, match="clock.start"):
        c.from_mapping({"clock": {"start": "soon"}})
