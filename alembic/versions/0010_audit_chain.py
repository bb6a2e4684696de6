"""Audit chain: user agent and request id on every event; seq, prev_digest and digest link
the events into a hash chain whose last link the one-row audit_chain_head holds

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from fastapi_users_db_sqlalchemy.generics import GUID

from alembic import op
from authsvc.services.audit_chain import GENESIS, digest_of, event_record

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_events = sa.table(
    "audit_events",
    sa.column("id", GUID()), sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor_id", GUID()), sa.column("actor_email", sa.String()),
    sa.column("action", sa.String()), sa.column("target_type", sa.String()),
    sa.column("target_id", sa.String()), sa.column("before", sa.JSON()),
    sa.column("after", sa.JSON()), sa.column("client_ip", sa.String()),
    sa.column("user_agent", sa.String()), sa.column("request_id", sa.String()),
    sa.column("seq", sa.BigInteger()), sa.column("prev_digest", sa.String()),
    sa.column("digest", sa.String()),
)  # fmt: skip
_head = sa.table(
    "audit_chain_head",
    sa.column("id", sa.Integer()), sa.column("seq", sa.BigInteger()),
    sa.column("digest", sa.String()),
)  # fmt: skip
_CHAIN_COLUMNS = ("seq", "prev_digest", "digest")


# Plain ALTER TABLE on every engine (batch mode would rebuild the SQLite table). The NOT NULL
# columns need a server default to be added; it only fills the existing rows until they are
# chained below, and PostgreSQL drops it after (SQLite cannot; the ORM always writes them).
def upgrade() -> None:
    op.add_column("audit_events", sa.Column("user_agent", sa.String(256), nullable=True))
    op.add_column("audit_events", sa.Column("request_id", sa.String(128), nullable=True))
    op.add_column(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    for name in ("prev_digest", "digest"):
        op.add_column(
            "audit_events",
            sa.Column(name, sa.String(64), nullable=False, server_default=sa.text("''")),
        )
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
    )
    # The existing trail, oldest first, becomes the start of the chain.
    bind = op.get_bind()
    rows = bind.execute(sa.select(_events).order_by(_events.c.at, _events.c.id)).all()
    prev = GENESIS
    for seq, row in enumerate(rows, start=1):
        record = event_record({**row._mapping, "seq": seq, "prev_digest": prev})
        digest = digest_of(record)
        bind.execute(
            _events.update()
            .where(_events.c.id == row.id)
            .values(seq=seq, prev_digest=prev, digest=digest)
        )
        prev = digest
    op.create_index("ix_audit_events_seq", "audit_events", ["seq"], unique=True)
    bind.execute(_head.insert().values(id=1, seq=len(rows), digest=prev))
    if bind.dialect.name != "sqlite":
        for name in _CHAIN_COLUMNS:
            op.alter_column("audit_events", name, server_default=None)


def downgrade() -> None:
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_events_seq", table_name="audit_events")
    for name in (*reversed(_CHAIN_COLUMNS), "request_id", "user_agent"):
        op.drop_column("audit_events", name)
