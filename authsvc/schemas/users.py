"""Request and response models for users. Writes refuse unknown fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi_users import schemas
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

# Longer than any password policy allows, so the policy answers with its own clear reason,
# but short enough that nobody can make us hash megabytes.
PASSWORD_FIELD_MAX = 4096
_PRIVILEGED = ("is_active", "is_superuser", "is_verified")


class UserRead(schemas.BaseUser[uuid.UUID]):
    created_at: datetime
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="Attributes the policies see (department, ...), set by admins.",
    )


class MeRead(UserRead):
    """``/users/me``: the user's own view, with an email change waiting for confirmation."""

    pending_email: str | None = Field(
        default=None,
        description="The address you asked to move to, until you confirm it through the link "
        "sent there (`POST /auth/confirm-email`); `null` when no change is pending.",
    )


def _without_privileged(schema: dict[str, Any]) -> None:
    # fastapi-users' base models declare the flags; registration and `PATCH /users/me` refuse
    # them (422), so the OpenAPI document must not offer them: they are unknown fields there.
    for name in _PRIVILEGED:
        schema.get("properties", {}).pop(name, None)
    schema["additionalProperties"] = False


def _not_null(schema: dict[str, Any]) -> None:
    # Optional (leave it out to keep the value), but never null: drop null from the schema.
    variants = [v for v in schema.pop("anyOf", []) if v.get("type") != "null"]
    if len(variants) == 1:
        schema.update(variants[0])
    elif variants:
        schema["anyOf"] = variants


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be null; leave the field out to keep its value")
    return value


NotNull = Field(default=None, json_schema_extra=_not_null)


class UserCreate(schemas.BaseUserCreate):
    """Self-registration: an email and a password, nothing else."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_without_privileged)
    password: str = Field(max_length=PASSWORD_FIELD_MAX)

    @model_validator(mode="after")
    def _no_privileged_fields(self) -> UserCreate:
        given = sorted(set(_PRIVILEGED) & self.model_fields_set)
        if given:
            raise ValueError(f"these fields cannot be set at registration: {', '.join(given)}")
        return self


class UserUpdate(schemas.BaseUserUpdate):
    """``PATCH /users/me`` and, for admins, ``PATCH /users/{id}``.

    A user changing their own password or email must also send ``current_password``; users can
    never change ``is_active``, ``is_superuser`` or ``is_verified`` on themselves.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_without_privileged)
    email: EmailStr | None = NotNull  # null would reach the lookup of the new address
    password: str | None = Field(default=None, max_length=PASSWORD_FIELD_MAX)
    current_password: str | None = Field(
        default=None,
        max_length=PASSWORD_FIELD_MAX,
        description="Needed to change your password or your email.",
    )

    _email_not_null = field_validator("email", mode="before")(_refuse_null)


class RevertEmailRequest(BaseModel):
    """``POST /auth/revert-email``: the token from the notice sent to the old address."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=4096)


class ConfirmEmailRequest(BaseModel):
    """``POST /auth/confirm-email``: the token sent to the address the account moves to."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=4096)


class RegistrationAccepted(BaseModel):
    """``POST /auth/register`` with verification required: the same answer for every address."""

    status: Literal["verification_sent"] = "verification_sent"
    message: str = (
        "If the address can be registered, a message with a verification link was sent to it."
    )


class UserPage(BaseModel):
    items: list[UserRead]
    total: int | None = Field(
        description="Users matching the filters, over all pages, with `include_total=true`; "
        "`null` otherwise (a full count on every call is slow on large tables)."
    )
    limit: int
    offset: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; `null` on the last page."
    )


class AdminUserUpdate(schemas.BaseUserUpdate):
    """``PATCH /users/{id}``: an administrator may also set the flags; no current password."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = NotNull
    is_active: bool | None = NotNull
    is_superuser: bool | None = NotNull
    is_verified: bool | None = NotNull
    password: str | None = Field(default=None, max_length=PASSWORD_FIELD_MAX)
    current_password: str | None = Field(
        default=None,
        max_length=PASSWORD_FIELD_MAX,
        description="Needed to change your own password or email when you do not hold "
        "`users:write`.",
    )
    attributes: dict[str, Any] | None = Field(
        default=None,
        # Not null in the document; the route answers null with USER_ATTRIBUTES_INVALID.
        json_schema_extra=_not_null,
        description="Replaces the user's policy attributes; checked against the `User` entity "
        "of the policy schema. Needs `users:write`.",
    )

    _not_null = field_validator("email", "is_active", "is_superuser", "is_verified", mode="before")(
        _refuse_null
    )
