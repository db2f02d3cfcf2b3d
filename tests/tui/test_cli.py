"""``kuloo-tui``: --help, and the socket chosen as kuloo-ctl chooses it; the TUI's words match the daemon's."""

from __future__ import annotations

import os
import subprocess

import pytest

from kuloo_daemon import vocabulary
from kuloo_daemon.control import user_methods
from kuloo_tui import vocabulary as tui_words
from kuloo_tui.client import DEFAULT_SOCKET, default_socket_path


@pytest.mark.e2e
def test_help(venv_bin):
    r = subprocess.run(
        [os.path.join(venv_bin, "kuloo-tui"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    assert "--socket" in r.stdout and "--config" in r.stdout and "KULOO_SOCKET" in r.stdout


def test_socket_path_precedence(tmp_path, monkeypatch):
    config = tmp_path / "k.toml"
    config.write_text('[control]\nsocket = "/srv/k/c.sock"\n')
    monkeypatch.delenv("KULOO_SOCKET", raising=False)
    assert default_socket_path() == DEFAULT_SOCKET == "/run/kuloo/control.sock"
    assert default_socket_path(config=str(config)) == "/srv/k/c.sock"
    monkeypatch.setenv("KULOO_SOCKET", "/env.sock")
    assert default_socket_path(config=str(config)) == "/env.sock"
    assert default_socket_path("/flag.sock", str(config)) == "/flag.sock"


@pytest.mark.e2e
def test_a_missing_config_is_one_line_not_a_traceback(venv_bin, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KULOO_SOCKET"}
    r = subprocess.run(
        [os.path.join(venv_bin, "kuloo-tui"), "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert (
        r.returncode == 2
        and r.stderr.startswith("kuloo-tui: cannot read")
        and "Traceback" not in r.stderr
    )


def test_the_tuis_choices_are_the_daemons():
    assert tui_words.PLANS == tuple(vocabulary.Plan)
    assert tui_words.FREQUENCIES == tuple(vocabulary.Frequency)
    assert tui_words.SUBSCRIPTIONS == user_methods.SUBSCRIPTIONS
    assert tuple(tui_words.SOURCES) == tuple(vocabulary.Source)
    assert tui_words.CRM_KINDS == user_methods.CRM_KINDS
    assert tui_words.OUTBOX_STATES == tuple(vocabulary.OutboxState)
