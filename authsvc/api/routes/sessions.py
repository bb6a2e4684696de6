"""Sessions: sign out here or everywhere, list and end one's sessions; admins end a user's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.authz.deps import CurrentPrincipal, require_permissions
from authsvc.authz.engine import Principal
from authsvc.db.models import Session
from authsvc.db.repositories import sessions as repo
from authsvc.errors import NotFound
from authsvc.services.roles import RoleService
from authsvc.services.sessions import SessionService

auth_router = APIRouter(tags=["auth"])
me_router = APIRouter(tags=["sessions"])
admin_router = APIRouter(tags=["sessions"])


class SessionRead(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    client_ip: str | None
    user_agent: str | None
    current: bool


def _read(session: Session, principal: Principal) -> SessionRead:
    return SessionRead(
        id=session.id,
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        expires_at=session.expires_at,
        client_ip=session.client_ip,
        user_agent=session.user_agent,
        current=session.id == principal.session_id,
    )


@auth_router.post(
    "/logout",
    status_code=204,
    summary="Sign out (end this session)",
    description="Its refresh token stops working, and its access tokens stop passing at once.",
)
async def logout(principal: CurrentPrincipal, db: SessionDep, services: ServicesDep) -> Response:
    if principal.session_id is not None:
        await SessionService(db, services.session_policy).end(principal.session_id, "logout")
    return Response(status_code=204)


@auth_router.post("/logout-all", status_code=204, summary="Sign out everywhere")
async def logout_all(
    principal: CurrentPrincipal, db: SessionDep, services: ServicesDep
) -> Response:
    assert principal.user_id is not None
    await SessionService(db, services.session_policy).end_all(principal.user_id, "logout-all")
    return Response(status_code=204)


@me_router.get("/me/sessions", response_model=list[SessionRead], summary="My sessions")
async def my_sessions(principal: CurrentPrincipal, db: SessionDep) -> list[SessionRead]:
    assert principal.user_id is not None
    return [_read(s, principal) for s in await repo.live_sessions(db, principal.user_id)]


@me_router.delete("/me/sessions/{session_id}", status_code=204, summary="End one of my sessions")
async def end_my_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, db: SessionDep, services: ServicesDep
) -> Response:
    found = await db.get(Session, session_id)
    if found is None or found.user_id != principal.user_id or found.revoked_at is not None:
        raise NotFound("No such session.", code="SESSION_NOT_FOUND")
    await SessionService(db, services.session_policy).end(session_id, "user")
    return Response(status_code=204)


@admin_router.get(
    "/{user_id:uuid}/sessions", response_model=list[SessionRead], summary="A user's sessions"
)
async def user_sessions(
    user_id: uuid.UUID,
    db: SessionDep,
    principal: Annotated[Principal, require_permissions("users:read")],
    ip: ClientIP,
) -> list[SessionRead]:
    user = await RoleService(db, principal, ip).user(user_id)
    return [_read(s, principal) for s in await repo.live_sessions(db, user.id)]


@admin_router.delete(
    "/{user_id:uuid}/sessions",
    status_code=204,
    summary="End all of a user's sessions",
    description="Recorded in the audit trail. 403 `PERMISSION_DENIED` (with `missing`) for an "
    "account holding a power the caller lacks (a permission, a role the policies name, "
    "superuser status).",
)
async def end_user_sessions(
    user_id: uuid.UUID,
    db: SessionDep,
    services: ServicesDep,
    principal: Annotated[Principal, require_permissions("users:write")],
    ip: ClientIP,
) -> Response:
    service = RoleService(db, principal, ip, services.policies.bundle.named_roles)
    user = await service.user(user_id)
    await service.guard_target(user)
    ended = await repo.revoke_all(db, user.id, "admin")
    await service.record("user.sessions.revoke", "user", str(user.id), None, {"ended": ended})
    await db.commit()
    return Response(status_code=204)
