"""Developers' tool: write the migration for model changes.

    .venv/bin/python -m kuloo_daemon.store.makemigrations

Runs tortoise's migration autodetector against the models and the existing migrations in
``store/migrations`` and writes a new migration file when they differ.
"""

import asyncio

from tortoise import Tortoise
from tortoise.migrations.autodetector import MigrationAutodetector

from .bridge import tortoise_config


async def write_migrations() -> list[str]:
    config = tortoise_config(":memory:")
    await Tortoise.init(config=config)
    try:
        writers = await MigrationAutodetector(Tortoise.apps, config["apps"]).changes()
        return [str(w.write()) for w in writers]
    finally:
        await Tortoise.close_connections()


def main() -> None:
    written = asyncio.run(write_migrations())
    print("\n".join(f"wrote {path}" for path in written) or "no changes")


if __name__ == "__main__":
    main()
