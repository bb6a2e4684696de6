"""Token introspection (RFC 7662) and revocation (RFC 7009), and service-client registration."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import require_permissions
from authsvc.authz.engine import Principal
from authsvc.authz.permissions import PERMISSION_NAME
from authsvc.db.models import OAuthClient, Session
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.services import clients
from authsvc.services.callers import Anonymous
from authsvc.services.clients import ClientService
from authsvc.services.container import AppServices
from authsvc.services.sessions import hash_refresh_token

router = APIRouter(tags=["auth"])
# Not under the per-IP limit: resource servers in introspection mode call it on every request.
# Only registered clients get an answer, and their 256-bit secrets cannot be guessed.
introspection_router = APIRouter(tags=["auth"])
clients_router = APIRouter(tags=["clients"])

_INACTIVE = {"active": False}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _access_token_state(
    services: AppServices, db: SessionDep, token: str
) -> Mapping[str, Any] | None:
    """The claims of an access token the guards would accept right now, else None: the same
    resolver, so introspection and the routes never disagree."""
    caller = await services.callers.resolve(db, token)
    return None if isinstance(caller, Anonymous) else caller.claims


async def _authenticated_client(
    request: Request, db: SessionDep, client_id: str | None, client_secret: str | None
) -> OAuthClient:
    given = clients.credentials(request.headers.get("authorization"), client_id, client_secret)
    if given is None:
        raise clients.invalid_client()
    return await clients.authenticate(db, *given)


@introspection_router.post(
    "/introspect",
    summary="Token introspection (RFC 7662), for service clients",
    description="Client authentication by HTTP Basic or `client_id`/`client_secret`. Answers "
    '`{"active": false}` for an expired, revoked, stale, malformed or foreign token, and the '
    "token's claims with `active: true` otherwise. Access and refresh tokens.",
    responses=error_responses(401, oauth=True),
)
async def introspect(
    request: Request,
    services: ServicesDep,
    db: SessionDep,
    token: Annotated[str, Form(max_length=8192)] = "",
    token_type_hint: Annotated[str | None, Form(max_length=32)] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    await _authenticated_client(request, db, client_id, client_secret)
    claims = await _access_token_state(services, db, token) if token else None
    if claims is not None:
        body = {"active": True, "token_type": "access_token", **claims}
        return JSONResponse(body, headers=_NO_STORE)
    stored = await sessions_repo.by_token_hash(db, hash_refresh_token(token)) if token else None
    if stored is not None and stored.used_at is None:
        session = await db.get(Session, stored.session_id)
        if sessions_repo.is_live(session):
            assert session is not None
            body = {
                "active": True,
                "token_type": "refresh_token",
                "sub": str(session.user_id),
                "sid": str(session.id),
                "exp": int(session.expires_at.timestamp()),
            }
            return JSONResponse(body, headers=_NO_STORE)
    return JSONResponse(_INACTIVE, headers=_NO_STORE)


@router.post(
    "/revoke",
    summary="Token revocation (RFC 7009)",
    description="A user's access or refresh token: ends the session it belongs to; client "
    "credentials are optional (a public app revokes its own token), but wrong ones are refused "
    "with `invalid_client`. A service (client_credentials) token: revoked only when the request "
    "authenticates as the client it was issued to; it then stops passing introspection and "
    "`/authz/check` at once. Always 200, also for unknown tokens and for another client's "
    "tokens, which are left alone (§2.1, §2.2).",
    response_class=Response,  # §2.2: an empty 200
    responses=error_responses(401, oauth=True),
)
async def revoke(
    request: Request,
    services: ServicesDep,
    db: SessionDep,
    token: Annotated[str, Form(max_length=8192)] = "",
    token_type_hint: Annotated[str | None, Form(max_length=32)] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> Response:
    # §2.1: the hint only saves a lookup; every kind of token is tried whatever it says.
    given = clients.credentials(request.headers.get("authorization"), client_id, client_secret)
    requester = await clients.authenticate(db, *given) if given is not None else None
    claims = services.callers.claims(token)
    if claims is not None and clients.is_service_token(claims):
        await clients.revoke_service_token(db, requester, claims)
        return Response(status_code=200, headers=_NO_STORE)
    session_id: uuid.UUID | None = None
    if claims is not None:
        try:
            session_id = uuid.UUID(str(claims["sid"]))
        except ValueError:
            session_id = None
    else:
        stored = await sessions_repo.by_token_hash(db, hash_refresh_token(token))
        session_id = stored.session_id if stored is not None else None
    if session_id is not None:
        await sessions_repo.revoke(db, [session_id], "revoked")
        await db.commit()
    return Response(status_code=200, headers=_NO_STORE)


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    permissions: list[Annotated[str, Field(pattern=PERMISSION_NAME.pattern)]] = Field(
        default_factory=list, max_length=100
    )


class ClientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    permissions: list[str]
    created_at: datetime


class ClientCreated(ClientRead):
    client_secret: str = Field(description="Shown once; only its hash is kept.")


@clients_router.post(
    "/clients",
    status_code=201,
    response_model=ClientCreated,
    summary="Register a service client",
    description="Answers the client secret once. The client's tokens carry the given "
    "permissions; giving them needs holding them, any service's (403 `PERMISSION_DENIED` with "
    "`missing`); 404 for an unknown permission.",
    responses=error_responses(404),
)
async def create_client(
    body: ClientCreate,
    db: SessionDep,
    principal: Annotated[Principal, require_permissions("clients:write")],
    ip: ClientIP,
) -> ClientCreated:
    client, secret = await ClientService(db, principal, ip).register(body.name, body.permissions)
    return ClientCreated.model_validate({**ClientRead.model_validate(client).model_dump(),
                                         "client_secret": secret})  # fmt: skip


@clients_router.get(
    "/clients",
    response_model=list[ClientRead],
    summary="List service clients",
)
async def list_clients(
    db: SessionDep, principal: Annotated[Principal, require_permissions("clients:read")]
) -> list[ClientRead]:
    return [ClientRead.model_validate(c) for c in await ClientService(db, principal, None).all()]


@clients_router.delete(
    "/clients/{client_id}",
    status_code=204,
    summary="Delete a service client",
    description="Its tokens stop passing introspection at once. 403 `PERMISSION_DENIED` (with "
    "`missing`) unless the caller holds the client's permissions.",
)
async def delete_client(
    client_id: str,
    db: SessionDep,
    principal: Annotated[Principal, require_permissions("clients:write")],
    ip: ClientIP,
) -> Response:
    await ClientService(db, principal, ip).delete(client_id)
    return Response(status_code=204)
