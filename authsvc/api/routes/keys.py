"""Signing keys: list them, rotate the active one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import require_permissions
from authsvc.authz.engine import Principal
from authsvc.security.keys import SigningKey
from authsvc.services.keys import KeyService

router = APIRouter(tags=["keys"])


class KeyRead(BaseModel):
    kid: str
    alg: str
    activates_at: datetime
    active: bool


def _read(key: SigningKey, active_kid: str) -> KeyRead:
    return KeyRead(
        kid=key.kid,
        alg=key.alg,
        activates_at=datetime.fromtimestamp(key.activates_at, UTC),
        active=key.kid == active_kid,
    )


@router.get(
    "/keys",
    response_model=list[KeyRead],
    summary="The published signing keys, newest first",
    dependencies=[require_permissions("keys:read")],
)
async def list_keys(services: ServicesDep) -> list[KeyRead]:
    ring = services.keys
    active = ring.active.kid
    return [_read(key, active) for key in sorted(ring.published(), key=lambda k: -k.activates_at)]


@router.post(
    "/keys/rotate",
    response_model=KeyRead,
    status_code=201,
    summary="Rotate the signing key",
    description="Creates a key that is published at once and signs after "
    "`AUTHSVC_KEY_ACTIVATION_DELAY_SECONDS`; the old key stays published until its last token "
    "has expired. Every worker picks it up within seconds. 409 `KEYS_NOT_ROTATABLE` when a "
    "single key file is configured (`AUTHSVC_SIGNING_KEY_FILE`).",
    responses=error_responses(409),
)
async def rotate(
    services: ServicesDep,
    db: SessionDep,
    principal: Annotated[Principal, require_permissions("keys:write")],
    ip: ClientIP,
) -> KeyRead:
    service = KeyService(db, principal, ip, ring=services.keys, store=services.keystore)
    key = await service.rotate()
    return _read(key, services.keys.active.kid)
