"""The Alembic migrations, on SQLite and PostgreSQL: they build exactly the ORM's schema."""

from __future__ import annotations

import asyncio
import warnings

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from authsvc.db import migrations
from authsvc.db.models import Base


def _inspect(url: str) -> tuple[set[str], list[object], str | None]:
    async def run() -> tuple[set[str], list[object], str | None]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:

                def sync(connection: Connection) -> tuple[set[str], list[object], str | None]:
                    context = MigrationContext.configure(connection)
                    with warnings.catch_warnings():
                        # SQLite cannot reflect the lower(email) index; PostgreSQL compares it.
                        warnings.filterwarnings("ignore", ".*expression-based index")
                        diff = compare_metadata(context, Base.metadata)
                    tables = set(inspect(connection).get_table_names())
                    return tables, diff, context.get_current_revision()

                return await conn.run_sync(sync)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_migrations_match_the_models_and_downgrade_cleanly(database_url: str) -> None:
    tables, diff, revision = _inspect(database_url)
    assert {"user", "alembic_version"} <= tables
    assert diff == [], diff
    assert revision is not None

    migrations.downgrade(database_url, "base")
    tables, _, revision = _inspect(database_url)
    assert "user" not in tables
    assert revision is None

    migrations.upgrade(database_url)
    tables, diff, revision = _inspect(database_url)
    assert "user" in tables and diff == []
    assert revision is not None
