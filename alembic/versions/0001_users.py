"""users table

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from fastapi_users_db_sqlalchemy.generics import GUID

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", GUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("hashed_password", sa.String(length=1024), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("is_verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user"),
    )
    op.create_index("ix_user_email", "user", ["email"], unique=True)
    op.create_index("ix_user_created_at", "user", ["created_at"])
    # fastapi-users looks users up by lower(email): this index serves that lookup and makes
    # addresses differing only in case one account, even under concurrent registrations.
    op.create_index("ix_user_email_lower", "user", [sa.text("lower(email)")], unique=True)


def downgrade() -> None:
    op.drop_index("ix_user_email_lower", table_name="user")
    op.drop_index("ix_user_created_at", table_name="user")
    op.drop_index("ix_user_email", table_name="user")
    op.drop_table("user")
