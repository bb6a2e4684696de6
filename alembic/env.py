"""Alembic environment: async engines (aiosqlite, asyncpg).

The database URL comes from the ``sqlalchemy.url`` option when a caller sets it
(``authsvc migrate`` and the tests do), else from the authsvc settings.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Connection

from alembic import context
from authsvc.config import get_settings
from authsvc.db.models import Base
from authsvc.db.session import create_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
