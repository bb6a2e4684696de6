"""user list indexes: email prefix search at scale on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The list's keyset, WHERE (created_at, id) > (...) ORDER BY created_at, id, is served by
# ix_user_created_at (0001): PostgreSQL seeks on created_at and sorts the few rows sharing one
# instant (measured in bench/users_scale.py), so no composite index on (created_at, id).


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


# Plain CREATE INDEX, never batch mode: that would rebuild the SQLite table and lose the
# expression index on lower(email).
def upgrade() -> None:
    if _postgresql():
        # lower(email) LIKE 'abc%' can use a btree only under the C collation or with
        # text_pattern_ops: ix_user_email_lower (equality, uniqueness) cannot serve it.
        op.create_index(
            "ix_user_email_lower_pattern", "user", [sa.text("lower(email) text_pattern_ops")]
        )


def downgrade() -> None:
    if _postgresql():
        op.drop_index("ix_user_email_lower_pattern", table_name="user")
