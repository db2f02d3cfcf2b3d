"""Backup and restore of the SQLite store (``kuloo-daemon backup`` / ``restore``).

Standard library only (``sqlite3``), like ``files``: neither needs tortoise.

- ``backup``: SQLite's online backup API copies a consistent snapshot while the daemon
  runs (it writes through WAL; the copy sees one committed state). The copy is written
  to a temporary file created 0600 — it holds the channels' Sell tokens — checked with
  ``PRAGMA quick_check``, flushed, then renamed into place. An existing file is never
  overwritten. On PostgreSQL there is nothing to do here: ``pg_dump`` is the tool.
- ``restore`` (the daemon stopped: the caller holds the state lock): the copy must open,
  pass ``quick_check`` and carry a schema this version knows (no migration newer than
  the code). The current database and its ``-wal``/``-shm`` are moved aside (kept, with
  the time in their names), the copy is put in place 0600, and then the world the copy
  does not know about is accounted for (docs/operations.md, "Backup and restore"):

  * every channel's change-feed state is reset, so the next sync reads Sell whole
    rather than resuming from a cursor newer than the copy, and marked ``RESTORED_AT``:
    until that whole read is done, a Sell record carrying a KulooId the copy does not know
    (a user created after the copy was taken) is imported with that KulooId;
  * every user without a CRM link is marked "look up first" (``crm_push_at``): a lead
    may have been created for them after the copy was taken, so the sync searches Sell
    for it before it would create one;
  * mail queued (or being sent) in the copy may have left after it was taken: it becomes
    ``uncertain``, for the admin to resolve, never resent on its own;
  * delivery starts paused (``PAUSE_FILE`` in the state folder): mail sent after the copy
    was taken is unknown to it, so the admin checks what went out (the relay's log) and
    resumes (``delivery.resume``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..clock import wall_now
from ..vocabulary import RESTORED_AT
from .files import DATABASE_MODE, StoreFileError

PAGES_PER_STEP = 1024
PAUSE_FILE = "delivery-paused"  # in the state folder: its text says why
MIGRATIONS_TABLE = "tortoise_migrations"


def _known_migrations() -> set[str]:
    from .pg import known_migrations

    return known_migrations()


def backup(
    database: str | os.PathLike,
    target: str | os.PathLike,
    progress: Callable[[int, int], object] | None = None,
) -> Path:
    """Copy ``database`` to ``target`` (a new file, 0600) while it may be in use."""
    source, dest = Path(database), Path(target)
    if not source.is_file():
        raise StoreFileError(source, "no database here to back up")
    if dest.exists():
        raise StoreFileError(dest, "already exists; choose a new name (a backup never overwrites)")
    if not dest.parent.is_dir():
        raise StoreFileError(dest.parent, "no such folder")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, DATABASE_MODE
        )
    except OSError as exc:
        raise StoreFileError(tmp, f"cannot create the backup: {exc.strerror}") from None
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:

                def step(_status: int, remaining: int, total: int) -> None:
                    if progress is not None:
                        progress(total - remaining, total)

                src.backup(dst, pages=PAGES_PER_STEP, progress=step)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                problem = dst.execute("PRAGMA quick_check").fetchone()[0]
                if problem != "ok":
                    raise StoreFileError(tmp, f"the copy fails its check: {problem}")
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, DATABASE_MODE)
        os.rename(tmp, dest)
    except sqlite3.Error as exc:
        raise StoreFileError(source, f"cannot be copied: {exc}") from None
    except OSError as exc:
        raise StoreFileError(dest, f"cannot write the backup: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def check_copy(path: str | os.PathLike) -> list[str]:
    """The copy opens as a Kuloo database this version knows; returns its migrations."""
    copy = Path(path)
    if not copy.is_file():
        raise StoreFileError(copy, "no such file")
    try:
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise StoreFileError(copy, f"is damaged: {problem}")
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if MIGRATIONS_TABLE not in tables or "channel" not in tables:
                raise StoreFileError(
                    copy, "is not a Kuloo database (no schema version, no channels)"
                )
            applied = [
                r[0]
                for r in conn.execute(
                    f'SELECT name FROM "{MIGRATIONS_TABLE}" WHERE app = ? ORDER BY name',
                    ("models",),
                )
            ]  # noqa: S608
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreFileError(
            copy, f"is not a SQLite database this version can read ({exc})"
        ) from None
    newer = sorted(set(applied) - _known_migrations())
    if newer:
        raise StoreFileError(
            copy,
            f"was written by a newer kuloo-daemon (migration {newer[-1]} is unknown "
            "here); restore it with that version",
        )
    return applied


def restore(
    copy: str | os.PathLike,
    database: str | os.PathLike,
    state_dir: str | os.PathLike,
    now: datetime | None = None,
) -> Path | None:
    """Put ``copy`` in place of ``database`` (the daemon stopped); returns where the old one
    went (None: there was none)."""
    check_copy(copy)
    db = Path(database)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = db.with_name(f"{db.name}.before-restore-{stamp}")
    tmp = db.with_name(f".{db.name}.restoring")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        src = sqlite3.connect(f"file:{Path(copy)}?mode=ro", uri=True)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, DATABASE_MODE
        )
        os.close(fd)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            _account_for_the_gap(dst, now or wall_now())
            dst.commit()
        finally:
            dst.close()
            src.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        moved = False
        for suffix in ("", "-wal", "-shm"):
            current = db.with_name(db.name + suffix)
            if current.exists():
                os.rename(current, aside.with_name(aside.name + suffix))
                moved = moved or suffix == ""
        os.rename(tmp, db)
    except sqlite3.Error as exc:
        raise StoreFileError(copy, f"cannot be restored: {exc}") from None
    except OSError as exc:
        raise StoreFileError(db, f"cannot restore here: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    pause_delivery(
        state_dir,
        f"restored from {Path(copy).name} at {stamp}Z: mail queued in the copy may have "
        "left since it was taken; check the outbox, then resume delivery",
    )
    return aside if moved else None


def _account_for_the_gap(conn: sqlite3.Connection, now: datetime) -> None:
    """What happened after the copy was taken is unknown here: make the daemon look first."""

    def has(table: str, column: str) -> bool:  # an older copy may predate a column
        return any(row[1] == column for row in conn.execute(f'PRAGMA table_info("{table}")'))

    if has("channel", "sync_state"):
        # The feed starts over (a whole read), adopting the KulooIds written after the copy.
        conn.execute(
            "UPDATE channel SET sync_state = ?", (json.dumps({RESTORED_AT: now.isoformat()}),)
        )
    if has("outbox_message", "state"):
        # Mail waiting in the copy may have left after it was taken: the admin decides.
        conn.execute(
            "UPDATE outbox_message SET state = 'uncertain', last_error = ? "
            "WHERE state IN ('queued', 'sending')",
            ("restored from a backup: it may have been sent after the backup was taken",),
        )
    if has("kuloo_user", "crm_push_at"):
        conn.execute(
            "UPDATE kuloo_user SET crm_push_at = ? WHERE crm_id IS NULL",
            (now.strftime("%Y-%m-%d %H:%M:%S.%f+00:00"),),
        )


def pause_delivery(state_dir: str | os.PathLike, reason: str) -> None:
    path = Path(state_dir) / PAUSE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(reason + "\n")


def delivery_paused(state_dir: str | os.PathLike) -> str | None:
    """Why delivery is paused (the pause file's text), or None."""
    try:
        return (Path(state_dir) / PAUSE_FILE).read_text().strip() or "paused"
    except FileNotFoundError:
        return None


def resume_delivery(state_dir: str | os.PathLike) -> bool:
    try:
        os.unlink(Path(state_dir) / PAUSE_FILE)
    except FileNotFoundError:
        return False
    return True
