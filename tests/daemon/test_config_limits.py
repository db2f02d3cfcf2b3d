"""Configuration values that pass a naive range check but would break the daemon later.

NaN compares false with every bound, so ``nan`` (and ``inf``) slipped through for every
numeric key; an empty control socket and a database in a system folder are refused too.
Each case is tried through ``check-config`` and ``run`` as subprocesses, as an operator would.
"""

import os
import subprocess
import sys

import pytest

from kuloo_daemon import config as c

NUMERIC = [name for name, key in c.KEYS.items() if key.minimum is not None or key.maximum is not None]


def _cli(command: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kuloo_daemon.cli", command, "--config", path],
                          capture_output=True, text=True, timeout=30)


def _write(folder: str, body: str) -> str:
    path = os.path.join(folder, "k.toml")
    with open(path, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{folder}/state"\n[control]\nsocket = "{folder}/c.sock"\n{body}')
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
        assert any(p.startswith(f"{name}: ") and "is not a finite number" in p for p in problems), (name, problems)


@pytest.mark.parametrize("key, value", [
    ("daemon.scheduler_tick_seconds", "nan"),
    ("daemon.shutdown_grace_seconds", "nan"),
    ("sell.requests_per_second", "nan"),
    ("sell.timeout_seconds", "inf"),
])
def test_run_and_check_config_refuse_nan_before_starting(short_tmp, key, value):
    section, name = key.split(".")
    path = os.path.join(short_tmp, "k.toml")
    tables = {"daemon": f'state_dir = "{short_tmp}/state"\n', "control": f'socket = "{short_tmp}/c.sock"\n', section: ""}
    tables[section] += f"{name} = {value}\n"
    with open(path, "w") as f:
        f.write("".join(f"[{t}]\n{body}" for t, body in tables.items()))
    for command in ("check-config", "run"):
        r = _cli(command, path)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert f"{key}: {value} is not a finite number" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(short_tmp, "state")), "nothing may start with a refused config"


def test_an_empty_control_socket_is_refused(short_tmp):
    path = os.path.join(short_tmp, "k.toml")
    with open(path, "w") as f:
        f.write(f'[daemon]\nstate_dir = "{short_tmp}/state"\n[control]\nsocket = ""\n')
    r = _cli("check-config", path)
    assert r.returncode == 2 and "control.socket: must not be empty" in r.stderr, r.stderr


@pytest.mark.parametrize("database, why", [
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
])
def test_the_database_must_be_in_a_sensible_place(short_tmp, database, why):
    path = _write(short_tmp, f'[store]\ndatabase = "{database}"\n')
    r = _cli("check-config", path)
    assert r.returncode == 2, r.stdout
    assert "store.database: " in r.stderr and why in r.stderr, r.stderr


def test_a_state_dir_in_a_system_folder_is_refused(short_tmp):
    path = os.path.join(short_tmp, "k.toml")
    with open(path, "w") as f:
        f.write(f'[daemon]\nstate_dir = "/etc"\n[control]\nsocket = "{short_tmp}/c.sock"\n')
    r = _cli("check-config", path)
    assert r.returncode == 2 and "/etc/kuloo.sqlite3" in r.stderr and "system folder" in r.stderr, r.stderr


@pytest.mark.parametrize("database", ["kuloo.sqlite3", "db/kuloo.sqlite3", "/srv/kuloo/kuloo.sqlite3",
                                      "/var/lib/kuloo/other.sqlite3"])
def test_sensible_database_places_are_accepted(short_tmp, database):
    r = _cli("check-config", _write(short_tmp, f'[store]\ndatabase = "{database}"\n'
                                           '[links]\npublic_url = "https://links.example.com"\n'))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("body, key", [
    ('[sell]\nbase_url = "http://api.getbase.com"\n', "sell.base_url: must start with https://"),
    ('[smtp]\nhost = "mail.example.com"\nsecurity = "none"\nusername = "kuloo"\n',
     'smtp.security: "none" with smtp.username set'),
])  # fmt: skip
def test_run_and_check_config_refuse_secrets_in_clear(short_tmp, body, key):
    """Issue 20 items 12 and 15, as an operator meets them: neither command starts."""
    path = _write(short_tmp, body)
    for command in ("check-config", "run"):
        r = _cli(command, path)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert key in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(short_tmp, "state")), "nothing may start"


HTTPS_REFUSAL = 'links.public_url: must be an https:// address when delivery.transport = "smtp"'


@pytest.mark.parametrize("body, refused", [
    ("", True),  # empty public_url, a real relay (localhost) but the real Sell
    ('[links]\npublic_url = "http://links.example.com"\n', True),
    ('[links]\npublic_url = "http://links.example.com"\n[sell]\nbase_url = "http://127.0.0.1:9"\n'
     '[smtp]\nhost = "mail.example.com"\n', True),  # a real relay: no exception for tests
    ('[sell]\nbase_url = "http://127.0.0.1:9"\n', False),  # both loopback (tests)
    ('[links]\npublic_url = "http://links.test"\n[sell]\nbase_url = "http://[::1]:9"\n'
     '[smtp]\nhost = "127.0.0.1"\n', False),
    ('[links]\npublic_url = "https://links.example.com"\n', False),
    ('[delivery]\ntransport = "maildir"\nmaildir = "md"\n', False),  # nothing leaves
])  # fmt: skip
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
