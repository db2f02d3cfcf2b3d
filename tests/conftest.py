"""Two event loops in one pytest session (see docs/stack.md, "Tests with two event loops").

Async tests run on trio (pytest-trio) unless they carry ``@pytest.mark.anyio``, which the
TUI tests use to run on asyncio. ``trio_mode`` stays off: it breaks asyncio tests.
"""

import inspect
import os
import shutil
import sys
import tempfile

import pytest
from plugins.ports import ATTEMPTS, free_port

# The suite's fixtures that are not one folder's own: sellsim (shipped with it), and the daemon
# as a subprocess (tests/plugins/daemon_proc.py), a migrated SQLite file to copy
# (tests/plugins/stores.py). tests/ is on sys.path as this conftest's folder.
pytest_plugins = ["sellsim.pytest_plugin", "plugins.stores", "plugins.daemon_proc"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        fn = getattr(item, "function", None)
        if fn is None or not inspect.iscoroutinefunction(fn):
            continue
        if item.get_closest_marker("anyio") is None and item.get_closest_marker("trio") is None:
            item.add_marker(pytest.mark.trio)


@pytest.fixture
def anyio_backend():
    # anyio >= 4.12 would otherwise run every anyio test on trio too, where Textual fails.
    return "asyncio"


@pytest.fixture
def short_tmp():
    """A short folder under /tmp: AF_UNIX paths are limited to about 107 bytes."""
    path = tempfile.mkdtemp(dir="/tmp", prefix="kt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def venv_bin():
    return os.path.dirname(sys.executable)


# ----------------------------------------------------------------------------- PostgreSQL
# One throwaway PostgreSQL server per session (initdb + pg_ctl on a free port, fsync off),
# a migrated template database, and a fresh database per test copied from it
# (CREATE DATABASE … TEMPLATE, a file copy). Without the binaries, or when the server
# will not start, every PostgreSQL test skips with the reason, and the terminal summary
# repeats it: never silently.

PG_TEMPLATE = "kuloo_template"
PG_SKIP = "PostgreSQL unavailable: "


class PgServer:
    def __init__(self) -> None:
        import glob

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        self.bin = os.path.dirname(bins[-1]) if bins else ""
        self.root = ""
        self.port = 0
        self.problem = ""
        self.count = 0

    def _run(self, *args: str, as_postgres: bool = True, timeout: float = 60):
        import subprocess

        cmd = list(args)
        if as_postgres and os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        import pwd

        if os.environ.get("KULOO_TEST_POSTGRES") == "off":
            self.problem = "KULOO_TEST_POSTGRES=off"
            return
        if not self.bin:
            self.problem = (
                "no PostgreSQL binaries under "
                "/usr/lib/postgresql/*/bin (apt-get install postgresql)"
            )
            return
        try:
            owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        except KeyError:
            self.problem = "running as root and there is no 'postgres' user for initdb"
            return
        self.root = tempfile.mkdtemp(dir="/tmp", prefix="kpg-")
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        data = f"{self.root}/data"
        r = self._run(
            f"{self.bin}/initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        if r.returncode != 0:
            self.problem = f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
            return
        # Each pytest-xdist worker starts its own server: another may take the port between
        # the pick and pg_ctl's bind, so pick again then (the free-port rule of the suite).
        for attempt in range(ATTEMPTS):
            self.port = free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
            )
            self.opts = opts
            log = f"{self.root}/log{attempt}"
            r = self._run(f"{self.bin}/pg_ctl", "-D", data, "-w", "-l", log, "-o", opts, "start")
            if r.returncode == 0:
                break
            clash = os.path.exists(log) and "already in use" in open(log, errors="replace").read()
            if not clash or attempt == ATTEMPTS - 1:
                self.problem = (
                    f"pg_ctl start failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
                )
                self.port = 0
                return
        self.sql(f"CREATE DATABASE {PG_TEMPLATE}")
        from kuloo_daemon.store.bridge import migrate_blocking

        migrate_blocking(self.target(PG_TEMPLATE))

    def sql(self, statement: str, database: str = "postgres") -> str:
        r = self._run(
            f"{self.bin}/psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            statement,
            as_postgres=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {r.stderr.strip()}")
        return r.stdout.strip()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def target(self, database: str):
        from kuloo_daemon.config import parse_store_url
        from kuloo_daemon.store.pg import PgTarget

        return PgTarget(parse_store_url(self.url(database)))

    def fresh_database(self) -> str:
        self.count += 1
        name = f"t{os.getpid()}_{self.count}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
        return name

    def drop(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are terminated) but keep its data: a
        database outage for a test, ended by ``resume``."""
        r = self._run(f"{self.bin}/pg_ctl", "-D", f"{self.root}/data", "-w", "-m", "fast", "stop")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl stop: {r.stderr.strip()}")

    def resume(self) -> None:
        r = self._run(
            f"{self.bin}/pg_ctl",
            "-D",
            f"{self.root}/data",
            "-w",
            "-l",
            f"{self.root}/log",
            "-o",
            self.opts,
            "start",
        )
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {r.stderr.strip()}")

    def stop(self) -> None:
        if self.port:
            self._run(f"{self.bin}/pg_ctl", "-D", f"{self.root}/data", "-m", "immediate", "stop")
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    server = PgServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, and say why
        server.problem = f"{type(exc).__name__}: {exc}"
    yield server
    server.stop()


@pytest.fixture
def own_pg_server():
    """A PostgreSQL server of the test's own, which it may stop (``halt``) and start again
    (``resume``) — a database outage — without disturbing other tests; skips (saying why)
    without one. Yields the server; ``fresh_database()`` makes a migrated database."""
    server = PgServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip, and say why
        server.problem = f"{type(exc).__name__}: {exc}"
    if server.problem:
        server.stop()
        pytest.skip(f"PostgreSQL unavailable: {server.problem}")
    yield server
    server.stop()


@pytest.fixture
def pg_database(pg_server):
    """A fresh, migrated PostgreSQL database: its name; skips (saying why) without a server."""
    if pg_server.problem:
        pytest.skip(f"{PG_SKIP}{pg_server.problem}")
    name = pg_server.fresh_database()
    yield name
    pg_server.drop(name)


@pytest.fixture
def pg_target(pg_server, pg_database):
    """``store.pg.PgTarget`` of a fresh, migrated PostgreSQL database."""
    return pg_server.target(pg_database)


class Backend:
    """One of the two stores a parametrized test runs on: ``name`` is "sqlite" or
    "postgres"; ``url`` is a fresh migrated PostgreSQL database's ``[store] url`` (or "")."""

    def __init__(self, name: str, url: str = "", target=None) -> None:
        self.name, self.url, self.target = name, url, target

    @property
    def postgres(self) -> bool:
        return self.name == "postgres"

    def store_section(self) -> dict:
        """The ``[store]`` table for a config: empty on SQLite."""
        return {"url": self.url} if self.url else {}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """Parametrizes a test over both stores; the PostgreSQL half skips, saying why, without a
    server."""
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        name = request.getfixturevalue("pg_database")
        return Backend("postgres", server.url(name), server.target(name))
    return Backend("sqlite")


def pytest_terminal_summary(terminalreporter):
    """Repeats why the PostgreSQL tests skipped. It reads the skip reports (which pytest-xdist
    workers send to the controller), so the reason shows under ``-n`` too."""
    reasons: list[str] = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        message = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        reason = message.removeprefix("Skipped: ")
        if reason.startswith(PG_SKIP) and reason not in reasons:
            reasons.append(reason)
    for reason in reasons:
        terminalreporter.write_line(f"PostgreSQL tests SKIPPED: {reason}", yellow=True, bold=True)
