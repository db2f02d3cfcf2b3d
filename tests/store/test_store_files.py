"""The store's files: a bad database or state folder ends start-up with one clear line,
one daemon per state folder, and modes that keep the tokens private whatever the umask.

Everything runs ``kuloo-daemon run`` / ``migrate`` as subprocesses. The tests run as root,
where file modes do not stop writes, so "read-only" is a real read-only mount (tmpfs or a
read-only bind mount, inside a private mount namespace made with ``unshare -m``) and
"unwritable" is a folder owned by another user with the daemon's root stripped of the
capabilities that override file modes (``setpriv --bounding-set``).
"""

import os
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest

from kuloo_daemon.store import files

pytestmark = pytest.mark.e2e  # every test here runs a subprocess

NOBODY = 65534
COMMANDS = ["run", "migrate"]


class Setup:
    def __init__(self, root: str, database: str = "") -> None:
        self.root = root
        self.state = os.path.join(root, "state")
        self.config = os.path.join(root, "k.toml")
        self.db = os.path.join(self.state, database or "kuloo.sqlite3")
        with open(self.config, "w") as f:
            f.write(
                f'[daemon]\nstate_dir = "{self.state}"\nshutdown_grace_seconds = 2\n'
                f'[control]\nsocket = "{root}/c.sock"\n[log]\nformat = "json"\nlevel = "debug"\n'
                '[links]\npublic_url = "https://links.example.com"\n'
                + (f'[store]\ndatabase = "{database}"\n' if database else "")
            )

    def cli(self, command: str, *, wrap: list[str] | None = None):
        args = [sys.executable, "-m", "kuloo_daemon.cli", command, "--config", self.config]
        return subprocess.run(
            (wrap or []) + args,
            capture_output=True,
            text=True,
            timeout=40,
            env={**os.environ, "NOTIFY_SOCKET": ""},
        )

    def healthy_database(self) -> None:
        r = self.cli("migrate")
        assert r.returncode == 0, r.stderr


def one_line(r: subprocess.CompletedProcess) -> str:
    """A refused start: exit status 1, exactly one line on stderr, no traceback anywhere
    (stdout carries only the JSON log, here at debug level)."""
    out = r.stderr.strip()
    assert r.returncode == 1, (r.returncode, r.stdout, out)
    assert len(out.splitlines()) == 1, out
    assert "Traceback" not in r.stdout + r.stderr
    assert all(line.startswith("{") for line in r.stdout.splitlines()), r.stdout
    return out


# root without the capabilities that bypass file modes: an ordinary user, as far as modes go
WITHOUT_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def in_private_mounts(script: str, target: str) -> list[str]:
    """Run the command after ``script`` (sh, with $0 = target) in a private mount namespace."""
    return ["unshare", "-m", "sh", "-c", f'{script} && exec "$@"', target]


# ------------------------------------------------------------------ item 5: bad files


@pytest.mark.parametrize("command", COMMANDS)
def test_a_truncated_database(short_tmp, command):
    s = Setup(short_tmp)
    s.healthy_database()
    os.truncate(s.db, os.path.getsize(s.db) // 2)
    out = one_line(s.cli(command))
    assert f"{s.db}: is damaged" in out and "restore it from a backup" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_random_bytes(short_tmp, command):
    s = Setup(short_tmp, "random.db")
    os.makedirs(s.state)
    with open(s.db, "wb") as f:
        f.write(os.urandom(8192))
    out = one_line(s.cli(command))
    assert f"{s.db}: is not a SQLite database" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_that_is_a_folder(short_tmp, command):
    s = Setup(short_tmp)
    os.makedirs(s.db)
    assert f"{s.db}: is a folder, not a SQLite database file" in one_line(s.cli(command))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_folder_that_is_a_file(short_tmp, command):
    s = Setup(short_tmp)
    with open(s.state, "w") as f:
        f.write("oops\n")
    assert f"{s.state}: is not a folder" in one_line(s.cli(command))


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_state_folder(short_tmp, command):
    s = Setup(short_tmp)
    os.makedirs(s.state)
    os.chown(s.state, NOBODY, NOBODY)
    os.chmod(s.state, 0o755)  # another user's folder
    out = one_line(s.cli(command, wrap=WITHOUT_OVERRIDE))
    assert f"{s.state}: is not writable by this user (uid 0)" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_folder_on_a_read_only_file_system(short_tmp, command):
    s = Setup(short_tmp)
    os.makedirs(s.state)
    wrap = in_private_mounts('mount -t tmpfs -o ro,size=1m tmpfs "$0"', s.state)
    assert f"{s.state}: is on a read-only file system" in one_line(s.cli(command, wrap=wrap))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_healthy_database_on_a_read_only_file_system(short_tmp, command):
    s = Setup(short_tmp)
    s.healthy_database()
    wrap = in_private_mounts('mount --bind "$0" "$0" && mount -o remount,ro,bind "$0"', s.state)
    assert f"{s.state}: is on a read-only file system" in one_line(s.cli(command, wrap=wrap))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_locked_by_another_program(short_tmp, command):
    s = Setup(short_tmp)
    s.healthy_database()
    holder = sqlite3.connect(s.db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # an operator's sqlite3 shell in the middle of a write
    try:
        out = one_line(s.cli(command))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert f"{s.db}: is locked by another program" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_in_a_system_folder_is_refused_by_the_config(short_tmp, command):
    s = Setup(short_tmp, "/etc/passwd")
    r = s.cli(command)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.splitlines() == [
        f"kuloo-daemon: {s.config}: store.database: '/etc/passwd', in the system folder /etc; "
        "keep it under daemon.state_dir"
    ]


def test_a_symlink_to_a_system_file_is_refused_by_the_config(short_tmp):
    s = Setup(short_tmp)
    os.makedirs(s.state)
    os.symlink("/etc/passwd", s.db)
    for command in COMMANDS:
        r = s.cli(command)
        assert (
            r.returncode == 2
            and f"'{s.db}' leads to '/etc/passwd', in the system folder /etc" in r.stderr
        )
    assert os.stat("/etc/passwd").st_mode & 0o777 == 0o644, "never touched"


# What the check above guards against, and the timeout behind it: the same CLI with the
# check switched off and a 2 s start-up timeout, so that tortoise 1.1.9 meets the foreign
# file itself (it then waits forever on its own connection lock).
WITHOUT_CHECK = """
import sys
from kuloo_daemon import cli
from kuloo_daemon.store import bridge
bridge.STARTUP_TIMEOUT = 2.0
bridge.check_database = lambda path: None
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", COMMANDS)
def test_start_up_is_bounded_even_when_tortoise_itself_hangs(short_tmp, command):
    s = Setup(short_tmp, "foreign.db")
    os.makedirs(s.state)
    with open(s.db, "wb") as f:
        f.write(os.urandom(8192))
    r = subprocess.run(
        [sys.executable, "-c", WITHOUT_CHECK, command, "--config", s.config],
        capture_output=True,
        text=True,
        timeout=40,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    out = one_line(r)
    assert out.startswith(f"kuloo-daemon: {s.db}: ") and "did not" in out and "within 2 s" in out


# ------------------------------------------------------------------ item 6: one daemon


def test_a_second_daemon_on_the_same_state_is_refused(daemon_factory, short_tmp):
    first = daemon_factory(sub="a").start()
    first.wait_for("READY=1")
    db = os.path.join(first.root, "state", "kuloo.sqlite3")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kuloo_daemon.cli",
            "run",
            "--config",
            str(first.config_path),
            "--socket",
            os.path.join(short_tmp, "other.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=40,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )
    out = one_line(r)
    assert f"{db}.lock: another kuloo-daemon (pid {first.proc.pid}) holds this state" in out
    assert "PostgreSQL" in out
    assert not os.path.exists(os.path.join(short_tmp, "other.sock"))
    # migrate while the daemon runs: refused too (the daemon migrates when it starts)
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "migrate", "--config", str(first.config_path)],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert "another kuloo-daemon" in one_line(r)
    with first.client() as c:
        assert c.call("status")["pid"] == first.proc.pid
    assert first.stop() == 0
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "migrate", "--config", str(first.config_path)],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert r.returncode == 0, r.stderr


def test_the_lock_covers_the_database_and_the_state_folder(short_tmp):
    """Another state folder with the same absolute database, and the same state folder with
    another database, are both refused while a migrate holds the lock."""
    s = Setup(short_tmp)
    s.healthy_database()
    other = os.path.join(short_tmp, "other")
    os.makedirs(other)
    same_db = Setup(other, s.db)  # absolute database path, different state folder
    third = os.path.join(short_tmp, "third")
    os.makedirs(third)
    same_dir = Setup(third, "second.sqlite3")
    with open(same_dir.config, "w") as f:
        f.write(
            f'[daemon]\nstate_dir = "{s.state}"\n[control]\nsocket = "{short_tmp}/t.sock"\n'
            '[store]\ndatabase = "second.sqlite3"\n'
        )
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with files.hold_state(s.state, s.db):
            ready.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert ready.wait(10)
        assert f"{s.db}.lock: another kuloo-daemon (pid {os.getpid()})" in one_line(
            same_db.cli("migrate")
        )
        assert f"{s.state}: another kuloo-daemon" in one_line(same_dir.cli("migrate"))
    finally:
        release.set()
        t.join()
    assert same_dir.cli("migrate").returncode == 0


# ------------------------------------------------------------------ item 8: file modes


def test_modes_are_private_whatever_the_umask(daemon_factory):
    d = daemon_factory(fresh=True)  # the daemon creates every file itself
    d.start(preexec_fn=lambda: os.umask(0o022))
    d.wait_for("READY=1")
    with d.client() as c:
        c.call("channels.create", {"name": "Acme", "api_token": "a-token-that-is-long-enough-1234"})
    state = d.root / "state"
    db = state / "kuloo.sqlite3"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in (
        db,
        state / "kuloo.sqlite3-wal",
        state / "kuloo.sqlite3-shm",
        state / "kuloo.sqlite3.lock",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_loose_modes_are_tightened(short_tmp):
    s = Setup(short_tmp)
    s.healthy_database()
    os.chmod(s.state, 0o755)  # as an older version left them
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(s.db + suffix):
            os.chmod(s.db + suffix, 0o644)
    r = s.cli("migrate")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(s.state).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(s.db).st_mode) == 0o600
