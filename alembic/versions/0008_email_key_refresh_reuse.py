"""email_key (one normalization for login limit, lookup and uniqueness) and refresh_tokens
reuse_count (a bound on replays inside the grace window)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from fastapi_users_db_sqlalchemy.generics import GUID

from alembic import op
from authsvc.security.identifiers import normalize_email

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_users = sa.table("user", sa.column("id", GUID()), sa.column("email", sa.String()),
                  sa.column("email_key", sa.String()))  # fmt: skip


# Plain ALTER TABLE on every engine: batch mode would rebuild the SQLite table and lose the
# expression index on lower(email). The server default only fills existing rows; the ORM
# always writes the key itself.
def upgrade() -> None:
    bind = op.get_bind()
    # Every key first: refuse before changing anything (SQLite's DDL is not transactional).
    keys: dict[str, str] = {}
    for user_id, email in bind.execute(sa.select(_users.c.id, _users.c.email)).all():
        key = normalize_email(email)
        if key in keys:
            raise RuntimeError(
                f"accounts {keys[key]} and {user_id} have addresses that differ only in case or "
                "Unicode form; merge or rename one, then migrate again"
            )
        keys[key] = user_id
    op.add_column(
        "refresh_tokens",
        sa.Column("reuse_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "user",
        sa.Column("email_key", sa.String(1024), nullable=False, server_default=sa.text("''")),
    )
    for key, user_id in keys.items():
        bind.execute(_users.update().where(_users.c.id == user_id).values(email_key=key))
    op.create_index("ix_user_email_key", "user", ["email_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_user_email_key", table_name="user")
    op.drop_column("user", "email_key")
    op.drop_column("refresh_tokens", "reuse_count")
