"""The one door from trio into the store: a dedicated asyncio loop thread.

tortoise-orm and aiosqlite are asyncio-only and the daemon's loop is trio's. Of the
bridges measured (docs/stack.md) we use the dedicated asyncio loop thread:
it ran at plain-asyncio speed, cancelled cleanly (the asyncio task is cancelled, the
transaction rolls back, the connection stays usable) and showed none of trio-asyncio's
traps (a hang at exit, deadlocks around transactions, crashes when mixed with threads).

Rules this module enforces or relies on:
- One crossing per unit of work. ``Store.run(fn, *args)`` runs the coroutine function
  ``fn`` on the loop thread; ``fn`` is a whole use case (a batch, a transaction), written
  in ``store/`` against the models. Querysets are built on the loop side, never here.
- tortoise 1.x keeps its state in a context variable: the context captured at the end
  of initialisation is copied into every task started here.
- A trio caller that is cancelled cancels the asyncio task, then waits (shielded) until
  it has unwound, so a transaction is rolled back before the caller goes on.
- tortoise 1.1's SQLite transaction takes its connection lock, then awaits ``BEGIN``; a
  cancellation landing there left the lock held and every later query waiting forever
  (a control client going away, the drain deadline). ``_transactions_release_their_lock``
  makes a failed start release it; ``tests/store/test_bridge.py`` cancels at random points.
- The loop is created inside its thread; closing tortoise and stopping the thread
  happens in a shielded ``finally``.
- Once open, every stored Sell token is handed to ``secrets.remember`` (log redaction).
- Before tortoise opens the database, ``files.check_database`` checks it with the
  standard library, and the whole start (check, migrations, init) is bounded by
  ``startup_timeout``: a bad file ends start-up with a one-line ``StoreFileError``
  instead of tortoise's silent hang.
- The same store opens a PostgreSQL database (a ``pg.PgTarget`` instead of a path):
  ``pg.check_server`` first (reachable, schema not newer than the code), then the same
  migrations and models. tortoise caches each model's INSERT per connection label across
  ``Tortoise.init`` (``EXECUTOR_CACHE``), so it is cleared before each init: a process
  that opened SQLite before PostgreSQL (the tests) would otherwise write with the other's SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import shutil
import threading
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
import trio

from ..config import Config
from ..secrets import remember
from .files import StoreFileError, check_database, prepare_folder
from .health import FULL, Health, StoreUnavailable
from .pg import PgTarget, check_server, tortoise_connection

T = TypeVar("T")
P = ParamSpec("P")
_log = structlog.get_logger("kuloo.store")
# Bytes free beside the database before a full disk counts as having room again.
ROOM_NEEDED = 1 << 20


def _transactions_release_their_lock() -> None:
    """A transaction whose start fails or is cancelled releases the SQLite lock it took.

    tortoise-orm 1.1.9 (``SqliteTransactionContext.__aenter__``) acquires the lock, then
    awaits ``begin()``; if that raises (a cancellation), ``__aexit__`` never runs and the
    lock stays held. Same steps here, with the release on failure. A ``BEGIN`` already
    handed to aiosqlite's thread still runs; the next transaction's ``begin()`` commits it
    (empty) first, so nothing half-written can follow.
    """
    from tortoise.backends.sqlite.client import SqliteTransactionContext
    from tortoise.connection import get_connections

    if getattr(SqliteTransactionContext.__aenter__, "_kuloo_safe", False):
        return

    async def __aenter__(self):  # noqa: N807 - replaces the library's method
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
            try:
                await self.connection.begin()
            except BaseException:
                get_connections().reset(self.token)
                raise
        except BaseException:
            self._trxlock.release()
            raise
        return self.connection

    # The patch itself: a marker on the function, and the library's method replaced.
    __aenter__._kuloo_safe = True  # type: ignore[attr-defined]
    SqliteTransactionContext.__aenter__ = __aenter__  # type: ignore[method-assign]


APP = "models"
STARTUP_TIMEOUT = 60.0  # under systemd's default TimeoutStartSec (90 s)
STOP_TIMEOUT = 10.0


Location = str | Path | PgTarget


def store_location(config: Config) -> Location:
    """The configured store: the PostgreSQL server of ``[store] url``, else the SQLite file."""
    url = config.store_url
    if url is None:
        return config.database_path
    try:
        password = config.store_password()
    except OSError as exc:  # a folder, an unreadable file: one line, as for a bad database file
        raise StoreFileError(
            exc.filename or "store-password",
            f"cannot read the store-password credential ({exc.strerror or exc})",
        ) from None
    return PgTarget(url, password)


def tortoise_config(location: Location) -> dict[str, Any]:
    if isinstance(location, PgTarget):
        connection = tortoise_connection(location)
    else:
        connection = _sqlite_connection(location)
    return {
        "connections": {"default": connection},
        "apps": {
            APP: {
                "models": ["kuloo_daemon.store.models"],
                "migrations": "kuloo_daemon.store.migrations",
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _sqlite_connection(db_path: str | Path) -> dict[str, Any]:
    return {
        "engine": "tortoise.backends.sqlite",
        "credentials": {
            "file_path": str(db_path),
            "journal_mode": "WAL",
            "foreign_keys": "ON",
            "busy_timeout": 5000,
            "synchronous": "NORMAL",
            # Deleted rows are overwritten with zeros, not left in free pages: an erased
            # user's data is gone from the file too (users.erase, docs/operations.md).
            "secure_delete": "ON",
        },
    }


async def apply_migrations(
    config: dict[str, Any], progress: Callable[[str, str, str], object] | None = None
) -> None:
    """Bring the schema up to date (runs on an asyncio loop)."""
    from tortoise.migrations.api import migrate

    await migrate(config=config, progress=progress)


class Store:
    """Handle on the store; create it with ``async with Store.open(path_or_target) as store``.

    ``db_path`` is the SQLite file (None on PostgreSQL); ``where`` names either, for
    ``status`` and the logs (never a password); ``postgres`` tells the backends apart."""

    def __init__(self, location: Location) -> None:
        self.target = location if isinstance(location, PgTarget) else None
        self.db_path = None if isinstance(location, PgTarget) else Path(location)
        self.where = str(self.target or self.db_path)
        self.postgres = self.target is not None
        self.config = tortoise_config(
            location if isinstance(location, PgTarget) else Path(location)
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._context: contextvars.Context | None = None
        self.health = Health(self.where)  # the database unreachable or its disk full (health.py)
        self._probed = -1e9  # trio time of the last look for room on a full disk
        self._failures = 0  # store failures so far: a call that began before one proves nothing

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        location: Location,
        *,
        migrate: bool = True,
        startup_timeout: float | None = None,
    ):
        """Open (and migrate) the store; ``StoreFileError`` when the file is unusable or
        start-up takes longer than ``startup_timeout`` (default ``STARTUP_TIMEOUT``)."""
        store = cls(location)
        startup_timeout = STARTUP_TIMEOUT if startup_timeout is None else startup_timeout
        try:
            with trio.move_on_after(startup_timeout) as scope:
                if store.db_path is not None:
                    await trio.to_thread.run_sync(prepare_folder, store.db_path.parent)
                    await trio.to_thread.run_sync(
                        check_database, store.db_path, abandon_on_cancel=True
                    )
                await store._start(migrate)
            if scope.cancelled_caught:
                raise StoreFileError(
                    store.where, f"the store did not open within {startup_timeout:g} s", stuck=True
                )
            yield store
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                await store._stop()

    async def _start(self, migrate: bool) -> None:
        _transactions_release_their_lock()
        ready = threading.Event()

        def loop_thread() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=loop_thread, name="kuloo-store", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(ready.wait)

        async def init() -> contextvars.Context:
            from tortoise import Tortoise
            from tortoise.backends.base.executor import EXECUTOR_CACHE

            if self.target is not None:
                await check_server(self.target)
            EXECUTOR_CACHE.clear()
            if migrate:
                await apply_migrations(self.config)
            await Tortoise.init(config=self.config)
            await _remember_stored_secrets()
            return contextvars.copy_context()

        self._context = await self._cross(init, context=None)

    async def _stop(self) -> None:
        if self._loop is None:
            return
        if self._context is not None:

            async def close() -> None:
                from tortoise import Tortoise

                await Tortoise.close_connections()

            try:
                await self._cross(close, context=self._context)
            finally:
                self._context = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            await trio.to_thread.run_sync(self._thread.join)
        self._loop = None

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one unit of work ``fn(*args, **kwargs)`` on the store's loop; one crossing."""
        if self._context is None:
            raise RuntimeError("the store is not open")
        if self.health.state == FULL and not await self._room_again():
            raise StoreUnavailable(FULL, self.health.detail)  # no new work while the disk is full
        if self.health.pending:  # an outage left repairs: they come before any other work
            await self._run_repairs()
        started = self._failures
        try:
            result = await self._cross(lambda: fn(*args, **kwargs), context=self._context)
        except Exception as exc:
            down = self.health.failed(exc)
            if down is None:
                raise
            self._failures += 1
            raise down from exc
        if started == self._failures:
            # Only a call that began after the last failure proves the store answers again:
            # one already under way when the disk filled (a read, say) may still succeed.
            self.health.answered()
        return result

    async def _room_again(self) -> bool:
        """A full disk (SQLite): at most once a second, checkpoint the WAL and look for room."""
        now = trio.current_time()
        if now - self._probed < 1.0 or self.db_path is None:
            return False
        self._probed = now
        from . import outage  # models: imported once the store is open

        try:
            await self._cross(outage.checkpoint, context=self._context)
            usage = await trio.to_thread.run_sync(shutil.disk_usage, self.db_path.parent)
        except Exception:  # still full, or the folder is gone: the next probe tries again
            return False
        if usage.free < ROOM_NEEDED:
            return False
        self.health.answered()
        return True

    async def _run_repairs(self) -> None:
        repairs = self.health.take_repairs()
        for i, (what, repair) in enumerate(repairs):
            try:
                await self._cross(repair, context=self._context)
            except Exception as exc:
                down = self.health.failed(exc)
                if down is None:  # a bug in a repair must not block the store for good
                    _log.exception("a repair after the store's outage failed", repair=what)
                    continue
                for left in repairs[i:]:
                    self.health.on_recovery(*left)
                raise down from exc
            _log.info("repaired after the store's outage", repair=what)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run the plain function ``callback(*args)`` on the store's loop, without waiting
        (a thread-safe hand-over, e.g. an event for ``events.Relay.send``)."""
        if self._loop is None:
            raise RuntimeError("the store is not open")
        self._loop.call_soon_threadsafe(callback, *args)

    async def _cross(
        self, make_coro: Callable[[], Awaitable[T]], *, context: contextvars.Context | None
    ) -> T:
        loop = self._loop
        assert loop is not None
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: dict[str, asyncio.Task] = {}

        def on_done(_task: asyncio.Task) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:  # the trio side is gone; nothing to wake
                pass

        async def unit() -> T:
            # Called inside the task: the unit sees tortoise's context, and a failure to
            # even start it (a bad argument) comes back as the task's error, not a hang.
            return await make_coro()

        def start() -> None:
            if context is None:
                task = loop.create_task(unit())
            else:
                task = loop.create_task(unit(), context=context.copy())
            box["task"] = task
            task.add_done_callback(on_done)

        loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        except trio.Cancelled:
            # Cancel the asyncio side and wait until it has unwound (rolled back).
            loop.call_soon_threadsafe(lambda: box["task"].cancel())
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        task = box["task"]
        if task.cancelled():
            raise RuntimeError("store task was cancelled on the loop side")
        return task.result()


async def _remember_stored_secrets() -> None:
    """Every Sell token in the store joins the log redaction's registry before any log
    line could show one (a token need not look like a token to be one)."""
    from .models import Channel

    for token in await Channel.filter(sell_token__not_isnull=True).values_list(
        "sell_token", flat=True
    ):
        remember(str(token))  # a str: tortoise types values_list(..., flat=True) as tuples


def migrate_blocking(
    location: Location,
    progress: Callable[[str, str, str], object] | None = None,
    *,
    timeout: float | None = None,
) -> None:
    """Apply migrations from a plain (non-trio) process, e.g. ``kuloo-daemon migrate``.

    ``StoreFileError`` when the file is unusable or migrating takes longer than ``timeout``."""
    from tortoise import Tortoise

    target = location if isinstance(location, PgTarget) else None
    if not isinstance(location, PgTarget):
        prepare_folder(Path(location).parent)
        check_database(location)
    timeout = STARTUP_TIMEOUT if timeout is None else timeout

    async def migrate_and_close() -> None:  # one task: tortoise's context lives in it
        try:
            if target is not None:
                await check_server(target)
            await apply_migrations(tortoise_config(location), progress)
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(Tortoise.close_connections(), STOP_TIMEOUT)

    async def go() -> None:
        try:
            await asyncio.wait_for(migrate_and_close(), timeout)
        except TimeoutError:
            raise StoreFileError(
                str(location), f"migrating did not finish within {timeout:g} s", stuck=True
            ) from None

    asyncio.run(go())
