"""Run the Alembic migrations programmatically (``authsvc migrate``, start-up, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

import authsvc
from alembic import command


def script_location() -> Path:
    package_dir = Path(authsvc.__file__).resolve().parent
    # A wheel carries the scripts inside the package; a source checkout has them at the top.
    for candidate in (package_dir / "_migrations", package_dir.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("Alembic migration scripts not found next to the authsvc package")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    # Percent signs in a URL (encoded passwords) would be read as interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking: call from a thread when an event loop is running (env.py uses asyncio.run)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
