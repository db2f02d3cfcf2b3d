"""The store's files on disk, checked with the standard library before tortoise sees them.

Owns the state folder, the single-daemon lock and the SQLite file's health and modes.
tortoise-orm 1.1.9 leaves its connection lock held when the first connect fails, so a
damaged, foreign or unwritable file would hang start-up forever without a word; every
problem is found here first and raised as ``StoreFileError``, whose message is one line
naming the file and the problem (``kuloo-daemon`` prints it and exits non-zero).

- ``prepare_folder``: a missing folder is created 0700 whatever the umask; the state
  folder is tightened to at most 0750 (systemd's ``StateDirectoryMode=0750``); a path
  that is a file, a read-only file system or a folder this user cannot write is refused.
- ``hold_state``: an exclusive ``flock`` on ``<database>.lock`` (beside the database)
  and on the state folder, held for the life of the process. A second daemon, or
  ``migrate`` while a daemon runs, is refused: SQLite serves one daemon; several daemons
  share work only on PostgreSQL (docs/operations.md).
- ``check_database``: the database is a regular file, opens as SQLite, passes
  ``PRAGMA quick_check`` and can take a write lock; it is created 0600, and an existing
  one (with its ``-wal``/``-shm``, which SQLite creates with the database's mode) is
  set to 0600: it holds the channels' Sell tokens.

Imports only the standard library and ``store``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from . import StoreError

FOLDER_MODE = 0o700
DATABASE_MODE = 0o600
LOCK_WAIT_SECONDS = 5.0  # how long the check waits for a SQLite lock held by another program


class StoreFileError(StoreError):
    """A store file that cannot be used; ``str()`` is one line naming the file.

    ``stuck`` means tortoise was given up on mid-way (a start-up timeout): its worker
    threads may never end, so the process should leave with ``os._exit``."""

    def __init__(self, path: str | os.PathLike, problem: str, *, stuck: bool = False) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem
        self.stuck = stuck


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied for this user (uid {os.getuid()})"
    if exc.errno == errno.ENOTDIR:
        return "a part of this path is a file, not a folder"
    return exc.strerror or str(exc)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def prepare_folder(path: str | os.PathLike, *, tighten: bool = False) -> Path:
    """Create ``path`` (mode 0700) or check it; ``tighten`` drops group-write and other bits."""
    folder = Path(path)
    try:
        info = folder.stat()
    except FileNotFoundError:
        try:
            folder.mkdir(mode=FOLDER_MODE, parents=True)
            os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass  # created meanwhile; checked below
        except OSError as exc:
            raise StoreFileError(folder, f"cannot create the folder: {_os_problem(exc)}") from None
        info = folder.stat()
    except OSError as exc:
        raise StoreFileError(folder, _os_problem(exc)) from None
    if not stat.S_ISDIR(info.st_mode):
        raise StoreFileError(folder, "is not a folder (a file is in the way)")
    if _read_only(folder):
        raise StoreFileError(folder, "is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreFileError(folder, f"is not writable by this user (uid {os.getuid()})")
    if tighten and info.st_mode & 0o027:
        try:
            os.chmod(folder, stat.S_IMODE(info.st_mode) & 0o750)
        except OSError as exc:
            raise StoreFileError(
                folder, f"cannot restrict its mode to 0750: {_os_problem(exc)}"
            ) from None
    return folder


def _lock(path: Path, fd: int, holder: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreFileError(
            path,
            f"another kuloo-daemon{holder} holds this state; stop it first "
            "(one daemon per SQLite database: more than one daemon needs the PostgreSQL store)",
        ) from None


@contextlib.contextmanager
def hold_state(state_dir: str | os.PathLike, database: str | os.PathLike) -> Iterator[None]:
    """Prepare the state folder and hold the single-daemon lock while the block runs."""
    folder = prepare_folder(state_dir, tighten=True)
    db = Path(database)
    prepare_folder(db.parent, tighten=db.parent == folder)
    lock_path = db.with_name(db.name + ".lock")
    fds: list[int] = []
    try:
        try:
            fd = os.open(
                lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, DATABASE_MODE
            )
        except OSError as exc:
            raise StoreFileError(
                lock_path, f"cannot open the lock file: {_os_problem(exc)}"
            ) from None
        pid = os.read(fd, 32).decode("ascii", "replace").strip()
        _lock(lock_path, fd, f" (pid {pid})" if pid.isdigit() else "")
        fds.append(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _lock(folder, dir_fd, f" (pid {pid})" if pid.isdigit() else "")
        fds.append(dir_fd)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing the descriptor releases its flock


@contextlib.contextmanager
def share_state(state_dir: str | os.PathLike) -> Iterator[None]:
    """The PostgreSQL store's counterpart of ``hold_state``: the state folder is prepared,
    and no lock is taken (several daemons share one PostgreSQL database)."""
    prepare_folder(state_dir, tighten=True)
    yield


def _set_mode(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(info.st_mode) != DATABASE_MODE:
        try:
            os.chmod(path, DATABASE_MODE)
        except OSError as exc:
            raise StoreFileError(
                path, f"cannot restrict its mode to 0600: {_os_problem(exc)}"
            ) from None


def check_database(database: str | os.PathLike) -> None:
    """Raise ``StoreFileError`` unless ``database`` is a healthy, writable SQLite file (or
    absent: then it is created, empty, with mode 0600)."""
    db = Path(database)
    try:
        info = db.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise StoreFileError(db, _os_problem(exc)) from None
    if info is None:
        if _read_only(db.parent):
            raise StoreFileError(db, "is on a read-only file system")
        try:
            os.close(
                os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_MODE)
            )
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreFileError(db, f"cannot create the database: {_os_problem(exc)}") from None
    elif not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a special file"
        raise StoreFileError(db, f"is {kind}, not a SQLite database file")
    if _read_only(db.parent):
        raise StoreFileError(db, "is on a read-only file system")
    if not os.access(db, os.R_OK | os.W_OK):
        raise StoreFileError(db, f"is not readable and writable by this user (uid {os.getuid()})")
    try:
        conn = sqlite3.connect(db, timeout=LOCK_WAIT_SECONDS, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreFileError(db, f"cannot be opened ({exc})") from None
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            first = rows[0][0] if rows else "no answer"
            raise StoreFileError(db, f"is damaged (quick_check: {first}); restore it from a backup")
        conn.execute("BEGIN IMMEDIATE")  # can we take the write lock?
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise StoreFileError(db, _sqlite_problem(exc)) from None
    finally:
        conn.close()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):  # only once it is ours for sure
        _set_mode(path)


def _sqlite_problem(exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "file is not a database" in text:
        return "is not a SQLite database (is store.database the right file?)"
    if "malformed" in text:
        return f"is damaged ({text}); restore it from a backup"
    if "locked" in text or "busy" in text:
        return f"is locked by another program ({text})"
    if "readonly" in text or "read-only" in text:
        return f"cannot be written ({text})"
    return f"cannot be used ({text})"
