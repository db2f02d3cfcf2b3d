"""The PostgreSQL store (``[store] url``): where it is, and the checks made before tortoise.

SQLite stays the embedded default; PostgreSQL lets several daemons share the channels
(``store.leases``). The same models and migrations serve both. tortoise-orm left alone
with an unreachable server waits inside its pool for as long as the driver lets it, and
with a schema newer than the code it would run happily against columns it does not
know; both are found here first, with asyncpg directly and a short timeout, and raised
as ``StoreServerError`` — one line naming the server (never the password) and the
problem, which ``kuloo-daemon`` prints before it exits non-zero.

Imports only the standard library, asyncpg (lazily), the base modules and ``store``.
"""

from __future__ import annotations

import asyncio
import pkgutil
from dataclasses import dataclass
from typing import Any

from ..config import StoreUrl
from ..secrets import Secret, remember
from .files import StoreFileError

CONNECT_TIMEOUT = 10.0
MIGRATIONS_TABLE = "tortoise_migrations"  # tortoise's MigrationRecorder default


class StoreServerError(StoreFileError):
    """The PostgreSQL server cannot be used; ``str()`` is one line naming the server.

    A ``StoreFileError`` so that every caller that stops on an unusable store (the CLI,
    start-up) treats both backends alike; ``path`` is the URL without a password."""


@dataclass(frozen=True)
class PgTarget:
    """A PostgreSQL store: the server (``StoreUrl``) and the password credential, if any."""

    url: StoreUrl
    password: Secret | None = None

    def __str__(self) -> str:
        return str(self.url)

    def credentials(self) -> dict[str, Any]:
        if self.password is not None:
            remember(self.password.reveal())  # a driver error quoting it is still scrubbed
        return {
            "host": self.url.host,
            "port": self.url.port,
            "user": self.url.user,
            "password": self.password.reveal() if self.password is not None else None,
            "database": self.url.database,
        }


def tortoise_connection(target: PgTarget) -> dict[str, Any]:
    return {
        "engine": "tortoise.backends.asyncpg",
        "credentials": {
            **target.credentials(),
            "minsize": 1,
            "maxsize": 10,
            "timeout": CONNECT_TIMEOUT,
        },
    }


def known_migrations() -> set[str]:
    from . import migrations

    return {m.name for m in pkgutil.iter_modules(migrations.__path__) if m.name[:4].isdigit()}


async def check_server(target: PgTarget) -> None:
    """Raise ``StoreServerError`` unless the server answers and its schema is not newer
    than this code (runs on an asyncio loop)."""
    import asyncpg

    creds = target.credentials()
    try:
        conn = await asyncio.wait_for(
            asyncpg.connect(**creds, timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreServerError(
            str(target), f"cannot connect to the PostgreSQL server ({_why(exc)})"
        ) from None
    try:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE)
        applied = set()
        if exists:
            rows = await conn.fetch(
                f'SELECT name FROM "{MIGRATIONS_TABLE}" WHERE app = $1', "models"
            )  # noqa: S608
            applied = {r["name"] for r in rows}
    except asyncpg.PostgresError as exc:
        raise StoreServerError(
            str(target), f"cannot read the schema's version ({_why(exc)})"
        ) from None
    finally:
        await conn.close()
    newer = sorted(applied - known_migrations())
    if newer:
        raise StoreServerError(
            str(target),
            f"the schema is newer than this kuloo-daemon (migration {newer[-1]} is unknown here); "
            "run the newer version, or restore a backup from before the upgrade",
        )


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
