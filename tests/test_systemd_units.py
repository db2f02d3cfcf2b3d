"""The shipped units pass systemd-analyze verify, and the service is hardened to <= 2.5."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANALYZE = shutil.which("systemd-analyze") or "systemd-analyze"  # .ci/run installs it when missing


@pytest.fixture
def units(tmp_path):
    bindir = Path(sys.executable).parent
    assert (bindir / "kuloo-daemon").exists()
    text = (ROOT / "systemd" / "kuloo-daemon.service").read_text().replace("@BINDIR@", str(bindir))
    (tmp_path / "kuloo-daemon.service").write_text(text)
    shutil.copy(ROOT / "systemd" / "kuloo-daemon.socket", tmp_path)
    return tmp_path


def test_units_verify(units):
    r = subprocess.run([ANALYZE, "verify", "--man=no", "kuloo-daemon.service", "kuloo-daemon.socket"],
                       cwd=units, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kuloo-daemon" not in r.stderr, r.stderr  # no warnings about our units


def test_service_exposure_is_at_most_2_5(units):
    r = subprocess.run([ANALYZE, "security", "--offline=true", "kuloo-daemon.service"],
                       cwd=units, capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for kuloo-daemon\.service: ([0-9.]+)", r.stdout)
    assert match, r.stdout + r.stderr
    assert float(match.group(1)) <= 2.5


def test_service_is_notify_with_watchdog_and_credentials():
    text = (ROOT / "systemd" / "kuloo-daemon.service").read_text()
    for line in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=kuloo",
                 "RuntimeDirectory=kuloo", "LoadCredential=link-signing-key:", "LoadCredential=smtp-password:"]:
        assert line in text
    socket_unit = (ROOT / "systemd" / "kuloo-daemon.socket").read_text()
    assert "SocketMode=0660" in socket_unit and "SocketGroup=kuloo-admin" in socket_unit


def test_service_leaves_open_files_for_the_links_cap():
    """The daemon refuses an open-file limit below links.max_connections + 512."""
    from kuloo_daemon import config as c

    text = (ROOT / "systemd" / "kuloo-daemon.service").read_text()
    match = re.search(r"^LimitNOFILE=(\d+)$", text, re.MULTILINE)
    assert match and int(match.group(1)) == 8192
    assert int(match.group(1)) >= c.KEYS["links.max_connections"].default + 512
