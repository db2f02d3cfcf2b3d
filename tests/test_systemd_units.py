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
    r = subprocess.run(
        [ANALYZE, "verify", "--man=no", "kuloo-daemon.service", "kuloo-daemon.socket"],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kuloo-daemon" not in r.stderr, r.stderr  # no warnings about our units


def test_service_exposure_is_at_most_2_5(units):
    r = subprocess.run(
        [ANALYZE, "security", "--offline=true", "kuloo-daemon.service"],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for kuloo-daemon\.service: ([0-9.]+)", r.stdout)
    assert match, r.stdout + r.stderr
    assert float(match.group(1)) <= 2.5


def test_service_is_notify_with_watchdog_and_credentials():
    text = (ROOT / "systemd" / "kuloo-daemon.service").read_text()
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=kuloo",
        "RuntimeDirectory=kuloo",
        "LoadCredential=link-signing-key:",
        "LoadCredential=smtp-password:",
    ]:
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


def _directives(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, in order (systemd lets keys repeat)."""
    found: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _may(mode: int, owner: str, group: str, user: str, groups: set[str], want: int) -> bool:
    """POSIX permission check: the owner's bits, else the group's, else the others'."""
    if user == owner:
        bits = mode >> 6
    elif group in groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def test_every_kuloo_admin_member_reaches_the_control_socket():
    """An admin is only in ``kuloo-admin`` (sysusers): they must search /run/kuloo
    (created by the socket unit as root before the service starts, then handed to
    ``User``/``Group`` by ``RuntimeDirectory=``) and read and write the socket. The gate
    is the socket's own 0660 ``kuloo:kuloo-admin``, never the directory."""
    service = _directives(ROOT / "systemd" / "kuloo-daemon.service")
    sock = _directives(ROOT / "systemd" / "kuloo-daemon.socket")
    sysusers = (ROOT / "systemd" / "kuloo.sysusers.conf").read_text().split("\n")
    assert any(line.split()[:2] == ["g", "kuloo-admin"] for line in sysusers if line.strip())
    path = Path(sock["ListenStream"][-1])
    assert path.parent == Path("/run") / service["RuntimeDirectory"][-1]
    admin, admin_groups = "alice", {"alice", "kuloo-admin"}
    stranger, stranger_groups = "mallory", {"mallory"}
    directories = [  # (mode, owner, group) of /run/kuloo in each phase of its life
        (int(sock["DirectoryMode"][-1], 8), "root", "root"),  # socket unit only
        (
            int(service["RuntimeDirectoryMode"][-1], 8),
            service["User"][-1],
            service["Group"][-1],
        ),  # the service ran (and is preserved)
    ]
    socket_mode = int(sock["SocketMode"][-1], 8)
    socket_owner, socket_group = sock["SocketUser"][-1], sock["SocketGroup"][-1]
    for mode, owner, group in directories:
        assert _may(mode, owner, group, admin, admin_groups, 0o1), oct(mode)
        assert not _may(mode, owner, group, admin, admin_groups, 0o2)  # cannot plant files
    assert _may(socket_mode, socket_owner, socket_group, admin, admin_groups, 0o6)
    assert not _may(socket_mode, socket_owner, socket_group, stranger, stranger_groups, 0o2)
    assert service["RuntimeDirectoryPreserve"] == ["yes"]
