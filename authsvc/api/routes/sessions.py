"""Sessions: sign out here or everywhere, list and end one's sessions; admins end a user's."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.guards import CurrentPrincipal, require_permissions
from authsvc.authz.engine import Principal
from authsvc.db.models import Session
from authsvc.services.admin import UserAdminService
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
    description="Its refresh token stops working, and its access tokens stop passing at once. "
    "Recorded in the audit trail (`auth.logout`).",
)
async def logout(
    principal: CurrentPrincipal, db: SessionDep, services: ServicesDep, ip: ClientIP
) -> Response:
    await SessionService(db, services.session_policy, ip).logout(principal)
    return Response(status_code=204)


@auth_router.post(
    "/logout-all",
    status_code=204,
    summary="Sign out everywhere",
    description="Ends every session of the account. Recorded in the audit trail "
    "(`auth.logout`, with how many sessions ended).",
)
async def logout_all(
    principal: CurrentPrincipal, db: SessionDep, services: ServicesDep, ip: ClientIP
) -> Response:
    await SessionService(db, services.session_policy, ip).logout_all(principal)
    return Response(status_code=204)


@me_router.get("/me/sessions", response_model=list[SessionRead], summary="My sessions")
async def my_sessions(
    principal: CurrentPrincipal, db: SessionDep, services: ServicesDep
) -> list[SessionRead]:
    assert principal.user_id is not None
    live = await SessionService(db, services.session_policy).live(principal.user_id)
    return [_read(s, principal) for s in live]


@me_router.delete(
    "/me/sessions/{session_id}",
    status_code=204,
    summary="End one of my sessions",
    description="Recorded in the audit trail (`user.sessions.revoke`). 404 "
    "`SESSION_NOT_FOUND` for a session that is not one of yours or has already ended.",
)
async def end_my_session(
    session_id: uuid.UUID,
    principal: CurrentPrincipal,
    db: SessionDep,
    services: ServicesDep,
    ip: ClientIP,
) -> Response:
    await SessionService(db, services.session_policy, ip).end_own(principal, session_id)
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
    return [
        _read(s, principal) for s in await UserAdminService(db, principal, ip).sessions(user_id)
    ]


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
    named = services.policies.bundle.named_roles
    await UserAdminService(db, principal, ip, named_roles=named).end_sessions(user_id)
    return Response(status_code=204)
