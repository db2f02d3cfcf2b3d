"""The daemon as a real subprocess, with a real NOTIFY_SOCKET, for end-to-end tests.

A pytest plugin, registered for the whole suite by ``pytest_plugins`` in tests/conftest.py
(as ``sellsim.pytest_plugin`` is): its fixtures (``daemon_factory``, ``daemon``,
``shared_files``, ``services_config``) are available in every test folder, and
``Daemon``/``make_services_config`` are imported from ``plugins.daemon_proc``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kuloo_daemon import config as config_mod
from kuloo_daemon.control.client import ControlClient

from .stores import seed_sqlite

T = TypeVar("T")

# A test that starts the daemon as a subprocess (through ``daemon_factory``, directly or
# through another fixture) is marked ``e2e``: `make test-fast` leaves those out.
E2E_FIXTURES = frozenset({"daemon_factory"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def eventually(condition: Callable[[], T], timeout: float = 60.0, what: str = "") -> T:
    """``condition()``'s first true value, polled until it comes: a test waits on what it
    expects, never on a guess of how long it takes (``timeout`` only bounds a failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never held within {timeout:g} s: {what or condition}")
        time.sleep(0.05)


def make_services_config(root: str, **sections: dict) -> config_mod.Config:
    """A validated configuration for in-process ``open_services`` under ``root``."""
    data = {
        "daemon": {"state_dir": f"{root}/state", "scheduler_tick_seconds": 0.2},
        "control": {"socket": f"{root}/c.sock"},
    }
    for name, body in sections.items():
        data[name] = {**data.get(name, {}), **body}
    return config_mod.from_mapping(data)


class Daemon:
    def __init__(
        self, root: str, extra_config: str = "", env: dict | None = None, sell: str = ""
    ) -> None:
        self.root = Path(root)
        self.socket_path = str(self.root / "c.sock")
        self.notify_path = str(self.root / "n.sock")
        self.config_path = self.root / "kuloo.toml"
        self.log_path = self.root / "daemon.log"
        self.config_path.write_text(
            f'[daemon]\nstate_dir = "{self.root / "state"}"\nshutdown_grace_seconds = 3\n'
            f'scheduler_tick_seconds = 0.2\n[control]\nsocket = "{self.socket_path}"\n'
            f'[log]\nformat = "json"\nlevel = "debug"\n{extra_config}'
            # Many daemons run at once on this machine: the links service takes a free port.
            + ("" if "[links]" in extra_config else '[links]\nlisten = "127.0.0.1:0"\n')
            # Tests never reach the real Sell: by default a loopback port that refuses.
            + "[sell]\n"
            + (
                sell
                if "base_url" in sell
                else f'base_url = "http://127.0.0.1:9"\nmax_attempts = 1\n{sell}'
            )
        )
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        self.env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, args: list[str] | None = None, pass_fds=(), preexec_fn=None) -> Daemon:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            args
            or [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            pass_fds=pass_fds,
            preexec_fn=preexec_fn,
        )
        return self

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        """The first notify message (after those already read) containing ``needle``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.messages):
                if needle in message:
                    del self.messages[: i + 1]
                    return message
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                if self.proc and self.proc.poll() is not None and not self.messages:
                    raise AssertionError(
                        f"daemon exited with {self.proc.returncode}:\n{self.log()}"
                    ) from None
                continue
            self.messages.append(data.decode())
        raise AssertionError(
            f"no {needle!r} from the daemon in {timeout}s; got {self.messages}\n{self.log()}"
        )

    def client(self) -> ControlClient:
        return ControlClient(self.socket_path, timeout=10)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)  # a bound for a loaded machine: it returns at the exit
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        if getattr(self, "_log", None):
            self._log.close()
        return self.proc.returncode if self.proc else 0


@pytest.fixture
def daemon_factory(short_tmp, sqlite_template):
    """``daemon_factory(extra_config, env, sub, sell, fresh)``: a ``Daemon`` (not started).
    Its SQLite store starts as a copy of a migrated one, unless the config has a
    ``[store]`` of its own or ``fresh=True`` (a test of what the daemon creates itself)."""
    started: list[Daemon] = []

    def make(
        extra_config: str = "",
        env: dict | None = None,
        sub: str = "",
        sell: str = "",
        fresh: bool = False,
    ) -> Daemon:
        root = os.path.join(short_tmp, sub) if sub else short_tmp
        os.makedirs(root, exist_ok=True)
        d = Daemon(root, extra_config, env, sell)
        if not fresh and "[store]" not in extra_config:
            seed_sqlite(sqlite_template, d.root / "state" / "kuloo.sqlite3")
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def shared_files(short_tmp):
    """``shared_files(signing_key)``: one credentials folder (the link-signing key) and the
    sample sequence articles, for several daemons that share a PostgreSQL store; returns the
    folder (``creds/`` and ``articles/`` in it)."""

    def make(signing_key: str) -> Path:
        shared = Path(short_tmp) / "shared"
        (shared / "creds").mkdir(parents=True)
        (shared / "creds" / "link-signing-key").write_text(signing_key + "\n")
        shutil.copytree(
            Path(__file__).resolve().parents[2] / "config" / "articles" / "sequence",
            shared / "articles" / "sequence",
        )
        return shared

    return make


@pytest.fixture
def daemon(daemon_factory):
    d = daemon_factory().start()
    d.wait_for("READY=1")
    return d


@pytest.fixture
def services_config(short_tmp, sqlite_template):
    """``services_config(clock={...}, sell={...})``: a configuration for ``open_services``;
    on SQLite, its database starts as a copy of a migrated one."""

    def make(**sections: dict) -> config_mod.Config:
        config = make_services_config(short_tmp, **sections)
        if config.store_url is None:
            seed_sqlite(sqlite_template, config.database_path)
        return config

    return make
