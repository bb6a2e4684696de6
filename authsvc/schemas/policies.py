"""Request and response models of the decision API and the policy administration routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from authsvc.authz.cedar import ENTITY_TYPE

MAX_BATCH = 100
# White space spelt out: Python's ``\s`` and JSON Schema's (ECMA-262) differ (U+0085, U+001C..F,
# U+FEFF), and the OpenAPI document must refuse exactly what the server refuses.
_BLANK = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
ACTION_PATTERN = rf'^([A-Za-z_][A-Za-z0-9_]*::)*[^{_BLANK}:"][^{_BLANK}"]*$'


class EntityRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200, pattern=ENTITY_TYPE.pattern, examples=["User"])
    id: str = Field(min_length=1, max_length=256)


class ResourceRef(EntityRef):
    """authsvc loads its own types (``User``, ``Role``, ``AuditLog``) itself; for the types of
    other services, the caller describes the entity."""

    attributes: dict[str, Any] | None = Field(
        default=None, description="Only for other services' entity types."
    )
    parents: list[EntityRef] = Field(
        default_factory=list, max_length=20, description="Only for other services' types."
    )


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal: EntityRef | None = Field(
        default=None,
        description="A `User`; by default the token's subject. Another principal needs "
        "`authz:check`.",
    )
    action: str = Field(
        min_length=1,
        max_length=200,
        pattern=ACTION_PATTERN,
        description="An action of the schema: `users:write`, or `Namespace::id` for "
        'another service\'s `Namespace::Action::"id"`.',
        examples=["users:write"],
    )
    resource: ResourceRef
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra context attributes. authsvc adds `ip` (unless given: the end "
        "user's address as the calling service saw it), `trusted_network`, `mfa` and `now`.",
    )


class CheckResult(BaseModel):
    decision: Literal["allow", "deny"]
    reasons: list[str] = Field(
        description="The @ids of the policies that decided: the permits that allowed, or the "
        "forbids that denied. Empty for a deny where no policy permits."
    )
    errors: list[str] = Field(
        description="Evaluation errors; any error makes the decision a deny (fail closed)."
    )


class BatchCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[CheckRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchCheckResult(BaseModel):
    results: list[CheckResult] = Field(description="In the order of the checks.")


class PolicyInfo(BaseModel):
    id: str
    file: str
    effect: Literal["permit", "forbid"]


class PolicySetRead(BaseModel):
    digest: str = Field(description="SHA-256 over the schema and policy files.")
    loaded_at: datetime
    worker_pid: int = Field(description="The process that answered (each worker loads its own).")
    policies: list[PolicyInfo]
