"""Request and response models for roles, permissions and the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from authsvc.authz.permissions import PERMISSION_NAME, ROLE_NAME

RoleName = Field(pattern=ROLE_NAME.pattern, min_length=1, max_length=64)
PermissionName = Field(pattern=PERMISSION_NAME.pattern, min_length=3, max_length=128)
# List items: what the routes accept, so the OpenAPI document says it (422 otherwise).
RoleRef = Annotated[str, Field(pattern=ROLE_NAME.pattern, min_length=1, max_length=64)]
PermissionRef = Annotated[str, Field(pattern=PERMISSION_NAME.pattern, min_length=3, max_length=128)]


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = RoleName
    description: str = Field(default="", max_length=500)
    parents: list[RoleRef] = Field(default_factory=list, max_length=50)
    permissions: list[PermissionRef] = Field(default_factory=list, max_length=200)


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=ROLE_NAME.pattern, max_length=64)
    description: str | None = Field(default=None, max_length=500)
    parents: list[RoleRef] | None = Field(default=None, max_length=50)


class RoleRead(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    permissions: list[str] = Field(description="Granted directly (not inherited).")
    parents: list[str] = Field(description="Roles whose permissions this role inherits.")
    created_at: datetime


class RolePage(BaseModel):
    items: list[RoleRead]
    total: int
    limit: int
    offset: int


class PermissionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = PermissionName
    description: str = Field(default="", max_length=500)


class PermissionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    builtin: bool = Field(description="Declared by authsvc itself.")
    created_at: datetime


class PermissionPage(BaseModel):
    items: list[PermissionRead]
    total: int
    limit: int
    offset: int


class UserRoles(BaseModel):
    user_id: uuid.UUID
    roles: list[str] = Field(description="Assigned directly.")


class EffectivePermission(BaseModel):
    name: str
    granted_by: list[str] = Field(description="The user's roles that grant it.")


class UserPermissions(BaseModel):
    user_id: uuid.UUID
    is_superuser: bool = Field(description="A superuser holds every permission.")
    permissions: list[EffectivePermission]


class RoleMember(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str


class RoleMemberPage(BaseModel):
    items: list[RoleMember]
    total: int
    limit: int
    offset: int


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    at: datetime
    actor_id: uuid.UUID | None
    actor_email: str | None
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    seq: int


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    total: int
    limit: int
    offset: int
