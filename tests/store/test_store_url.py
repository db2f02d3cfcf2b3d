"""``[store] url``: the PostgreSQL store's configuration, and the one-line refusals of
``kuloo-daemon`` when the server cannot be used (a real server from ``pg_server``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kuloo_daemon import config as config_mod
from kuloo_daemon.config import parse_store_url


def _config(tmp: str, **store) -> dict:
    return {
        "daemon": {"state_dir": f"{tmp}/state"},
        "control": {"socket": f"{tmp}/c.sock"},
        "store": store,
    }


@pytest.mark.parametrize(
    "url, host, port, database",
    [
        ("postgres://kuloo@db.example.com:6543/kuloo", "db.example.com", 6543, "kuloo"),
        ("postgresql://kuloo@10.0.0.5/k", "10.0.0.5", 5432, "k"),
        ("postgres://kuloo@/kuloo?host=/run/postgresql", "/run/postgresql", 5432, "kuloo"),
        (
            "postgres://kuloo@/kuloo?host=/run/postgresql&port=5433",
            "/run/postgresql",
            5433,
            "kuloo",
        ),
        ("postgres://kuloo@[::1]:5432/kuloo", "::1", 5432, "kuloo"),
    ],
)
def test_a_store_url_names_user_server_and_database(url, host, port, database):
    parsed = parse_store_url(url)
    assert (parsed.user, parsed.host, parsed.port, parsed.database) == (
        "kuloo",
        host,
        port,
        database,
    )
    assert parse_store_url(str(parsed)) == parsed  # shown as it can be read back


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql://kuloo@h/k", "postgres://"),
        ("postgres://kuloo:hunter22@h/k", "credential"),
        ("postgres://@h/k", "user"),
        ("postgres://kuloo@h", "database"),
        ("postgres://kuloo@/k", "socket folder"),
        ("postgres://kuloo@/k?host=run/pg", "absolute"),
        ("postgres://kuloo@h/k?host=/run/pg", "both"),
        ("postgres://kuloo@h/k?sslmode=disable", "sslmode"),
        ("postgres://kuloo@h:99999/k", "port must be a number between 1 and 65535"),
        ("postgres://kuloo@h:0/k", "port must be between 1 and 65535"),  # not the default 5432
        ("postgres://kuloo@h:x/k", "port must be a number"),
        (" postgres://kuloo@h/k", "spaces"),
    ],
)
def test_check_config_refuses_a_bad_url_saying_why_and_never_echoes_a_password(
    short_tmp, url, words
):
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.from_mapping(_config(short_tmp, url=url))
    [problem] = caught.value.problems
    assert problem.startswith("store.url: ") and words in problem
    assert "hunter22" not in problem


def test_url_and_sqlite_database_are_exclusive_and_sqlite_stays_the_default(short_tmp):
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.from_mapping(_config(short_tmp, url="postgres://k@h/k", database="k.sqlite3"))
    assert (
        "store.url: PostgreSQL (store.url) and SQLite (store.database) are exclusive; set one of them"
        in caught.value.problems
    )
    assert config_mod.from_mapping(_config(short_tmp)).store_url is None


def test_the_password_comes_from_the_store_password_credential(short_tmp):
    creds = Path(short_tmp) / "creds"
    creds.mkdir()
    cfg = config_mod.from_mapping(
        {**_config(short_tmp, url="postgres://k@h/k"), "credentials": {"directory": str(creds)}}
    )
    assert cfg.store_password() is None  # no file: peer or trust authentication
    (creds / "store-password").write_text("s3cret-pw\n")
    assert cfg.store_password().reveal() == "s3cret-pw"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _write(tmp: str, url: str, password: str | None = None) -> str:
    creds = Path(tmp) / "creds"
    creds.mkdir(exist_ok=True)
    if password is not None:
        (creds / "store-password").write_text(password)
    path = Path(tmp) / "k.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp}/state"\n[control]\nsocket = "{tmp}/c.sock"\n'
        f'[store]\nurl = "{url}"\n[credentials]\ndirectory = "{creds}"\n'
        '[links]\nlisten = "127.0.0.1:0"\npublic_url = "https://links.example.com"\n[log]\nlevel = "debug"\n'
    )
    return str(path)


@pytest.mark.e2e
def test_check_config_shows_the_url_without_the_password(short_tmp):
    r = _cli(
        "check-config",
        "--config",
        _write(short_tmp, "postgres://kuloo@db.example.com/k", "pw-not-shown"),
    )
    assert r.returncode == 0 and "postgres://kuloo@db.example.com:5432/k" in r.stdout
    assert "pw-not-shown" not in r.stdout + r.stderr


@pytest.mark.e2e
def test_an_unreachable_server_stops_run_with_one_line_naming_it(short_tmp):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _write(short_tmp, f"postgres://kuloo@127.0.0.1:{port}/k", "Pw-0123456789-secret")
    for command in ("run", "migrate"):
        r = _cli(command, "--config", config)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines == [
            f"kuloo-daemon: postgres://kuloo@127.0.0.1:{port}/k: cannot connect to the PostgreSQL "
            f"server ([Errno 111] Connect call failed ('127.0.0.1', {port}))"
        ], r.stderr
        assert "Pw-0123456789-secret" not in r.stdout + r.stderr


@pytest.mark.e2e
def test_a_schema_newer_than_the_code_is_refused(short_tmp, pg_server, pg_database):
    pg_server.sql(
        "INSERT INTO tortoise_migrations (app, name, applied_at) VALUES ('models', '0999_future', now())",
        pg_database,
    )
    r = _cli("run", "--config", _write(short_tmp, pg_server.url(pg_database)))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"kuloo-daemon: {pg_server.url(pg_database)}: the schema is newer than this kuloo-daemon (migration "
        "0999_future is unknown here); run the newer version, or restore a backup from before the upgrade"
    ]


@pytest.mark.e2e
def test_migrate_on_postgresql_brings_an_empty_database_up_to_date_and_takes_no_sqlite_lock(
    short_tmp, pg_server, pg_database
):
    name = f"empty_{Path(short_tmp).name.replace('-', '_')}"
    pg_server.sql(f"CREATE DATABASE {name}")
    try:
        config = _write(short_tmp, pg_server.url(name))
        r = _cli("migrate", "--config", config)
        assert r.returncode == 0, r.stderr
        assert f"{pg_server.url(name)}: schema up to date" in r.stdout
        assert pg_server.sql("SELECT count(*) FROM tortoise_migrations", name) == str(
            len(list((Path(__file__).parents[2] / "daemon/store/migrations").glob("0*.py")))
        )
        assert not list((Path(short_tmp) / "state").glob("*.lock"))
        again = _cli("migrate", "--config", config)
        assert again.returncode == 0 and "applied" not in again.stdout
    finally:
        pg_server.drop(name)


@pytest.mark.e2e
def test_an_unreadable_password_credential_is_one_line_naming_the_file(short_tmp):
    """Planted bug: only a missing file was handled, so a credential that cannot be read
    (here a folder where the file should be) stopped the daemon with a traceback."""
    config = _write(short_tmp, "postgres://kuloo@127.0.0.1:1/k")
    (Path(short_tmp) / "creds" / "store-password").mkdir()
    for command in ("run", "migrate"):
        r = _cli(command, "--config", config)
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"kuloo-daemon: {short_tmp}/creds/store-password: cannot read the store-password credential "
            "(Is a directory)"
        ], r.stderr


@pytest.mark.parametrize(
    "url, message",
    [
        (" postgres://k@h/k", "must not contain spaces"),
        ("postgres://k@h/k ", "must not contain spaces"),
        (
            "postgres://k@h/my db",
            "must not contain spaces",
        ),  # inside: strip() alone would not see it
        (
            "mysql://k@h/k",
            "must start with postgres:// (the PostgreSQL store); leave it empty for SQLite",
        ),
        (
            "postgres://k:pw@h/k",
            "must not contain a password: put it in the store-password credential file",
        ),
        ("postgres://h/k", "must name the user, e.g. postgres://kuloo@db.example.com:5432/kuloo"),
        (
            "postgres://k@h/",
            "must name the database after the host, e.g. postgres://kuloo@db.example.com/kuloo",
        ),
        (
            "postgres://k@h/a/b",
            "must name the database after the host, e.g. postgres://kuloo@db.example.com/kuloo",
        ),
        ("postgres://k@h/k?host", "has a malformed query (only ?host=/socket/folder&port=N)"),
        ("postgres://k@h/k?user=x&db=y", "only host and port may follow '?', not db, user"),
        (
            "postgres://k@h/k?sslmode=",
            "only host and port may follow '?', not sslmode",
        ),  # blank, still refused
        ("postgres://k@h/k#frag", "only host and port may follow '?', not a fragment"),
        ("postgres://k@h:65536/k", "port must be a number between 1 and 65535"),
        ("postgres://k@/k?host=/run/pg&port=65536", "port must be between 1 and 65535"),
        ("postgres://k@h:0/k", "port must be between 1 and 65535"),
        (
            "postgres://k@h/k?host=/run/pg",
            "names both a host and a socket folder (?host=); use one",
        ),
        (
            "postgres://k@/k?host=run/pg",
            "?host= must be an absolute socket folder, e.g. /run/postgresql",
        ),
        ("postgres://k@/k", "must name the host, or a socket folder with ?host=/run/postgresql"),
    ],
)
def test_each_bad_url_gets_its_whole_message(url, message):
    with pytest.raises(ValueError) as caught:
        parse_store_url(url)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "url, port",
    [
        ("postgres://k@h:1/k", 1),
        ("postgres://k@h:65535/k", 65535),
        ("postgres://k@/k?host=/run/pg&port=1", 1),
        ("postgres://k@/k?host=/run/pg&port=65535", 65535),
        ("postgresql://k@h/k", 5432),
    ],
)
def test_the_ports_at_the_edges_are_accepted(url, port):
    assert parse_store_url(url).port == port


def test_the_database_name_is_kept_whole():
    assert parse_store_url("postgres://k@h/XX_kuloo%2Dprod").database == "XX_kuloo-prod"
