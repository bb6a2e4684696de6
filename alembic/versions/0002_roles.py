"""roles, permissions, user roles, audit events; authz_version on users

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi_users_db_sqlalchemy.generics import GUID

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy: later permissions are added by the start-up sync, not by editing this file.
_PERMISSIONS = {
    "users:read": "List and read user accounts.",
    "users:write": "Change user accounts (email, password, flags).",
    "users:delete": "Delete user accounts.",
    "roles:read": "List roles, their permissions, members and users' roles.",
    "roles:write": "Create, change and delete roles; assign roles to users.",
    "permissions:read": "List permissions and users' effective permissions.",
    "permissions:write": "Declare new permissions.",
    "audit:read": "Read the audit trail.",
}


def upgrade() -> None:
    # Plain ALTER TABLE, also on SQLite: batch mode would rebuild the table and drop the
    # lower(email) index, which SQLite cannot reflect.
    op.add_column(
        "user", sa.Column("authz_version", sa.Integer(), nullable=False, server_default="0")
    )
    permissions = op.create_table(
        "permissions",
        sa.Column("id", GUID(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_permissions"),
        sa.UniqueConstraint("name", name="uq_permissions_name"),
    )
    roles = op.create_table(
        "roles",
        sa.Column("id", GUID(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_roles"),
        sa.UniqueConstraint("name", name="uq_roles_name"),
    )
    role_permissions = op.create_table(
        "role_permissions",
        sa.Column("role_id", GUID(), nullable=False),
        sa.Column("permission_id", GUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name="fk_role_permissions_role_id_roles", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["permission_id"],
            ["permissions.id"],
            name="fk_role_permissions_permission_id_permissions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", "permission_id", name="pk_role_permissions"),
    )
    op.create_table(
        "role_parents",
        sa.Column("role_id", GUID(), nullable=False),
        sa.Column("parent_id", GUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name="fk_role_parents_role_id_roles", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["roles.id"], name="fk_role_parents_parent_id_roles", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("role_id", "parent_id", name="pk_role_parents"),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", GUID(), nullable=False),
        sa.Column("role_id", GUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name="fk_user_roles_user_id_user", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name="fk_user_roles_role_id_roles", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name="pk_user_roles"),
    )
    op.create_index("ix_user_roles_role_id", "user_roles", ["role_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", GUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", GUID(), nullable=True),
        sa.Column("actor_email", sa.String(320), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(128), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_actor_id", "audit_events", ["actor_id"])
    op.create_index("ix_audit_events_target", "audit_events", ["target_type", "target_id"])

    now = datetime.now(UTC)
    permission_ids = {name: uuid.uuid4() for name in _PERMISSIONS}
    op.bulk_insert(
        permissions,
        [
            {"id": pid, "name": name, "description": _PERMISSIONS[name], "builtin": True,
             "created_at": now}
            for name, pid in permission_ids.items()
        ],
    )  # fmt: skip
    admin_id, user_id = uuid.uuid4(), uuid.uuid4()
    op.bulk_insert(
        roles,
        [
            {"id": admin_id, "name": "admin", "description": "Administers authsvc: every "
             "permission of this service.", "created_at": now},
            {"id": user_id, "name": "user", "description": "Given to every new registration.",
             "created_at": now},
        ],
    )  # fmt: skip
    op.bulk_insert(
        role_permissions,
        [{"role_id": admin_id, "permission_id": pid} for pid in permission_ids.values()],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_target", table_name="audit_events")
    op.drop_index("ix_audit_events_actor_id", table_name="audit_events")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_user_roles_role_id", table_name="user_roles")
    op.drop_table("user_roles")
    op.drop_table("role_parents")
    op.drop_table("role_permissions")
    op.drop_table("roles")
    op.drop_table("permissions")
    op.drop_column("user", "authz_version")  # SQLite >= 3.35 drops columns in place
