"""Token introspection (RFC 7662) and revocation (RFC 7009), and service-client registration."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import require_permissions
from authsvc.authz.engine import Principal
from authsvc.authz.permissions import PERMISSION_NAME
from authsvc.services import clients
from authsvc.services.clients import ClientService
from authsvc.services.tokens import TokenService

router = APIRouter(tags=["auth"])
# Not under the per-IP limit: resource servers in introspection mode call it on every request.
# Only registered clients get an answer, and their 256-bit secrets cannot be guessed.
introspection_router = APIRouter(tags=["auth"])
clients_router = APIRouter(tags=["clients"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


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
    tokens = TokenService(db, services.callers)
    if await tokens.client(request.headers.get("authorization"), client_id, client_secret) is None:
        raise clients.invalid_client()  # §2.1: only registered clients may ask
    return JSONResponse(await tokens.introspect(token), headers=_NO_STORE)


@router.post(
    "/revoke",
    summary="Token revocation (RFC 7009)",
    description="A user's access or refresh token: ends the session it belongs to; client "
    "credentials are optional (a public app revokes its own token), but wrong ones are refused "
    "with `invalid_client`. A service (client_credentials) token: revoked only when the request "
    "authenticates as the client it was issued to; it then stops passing introspection and "
    "`/authz/check` at once. Always 200, also for unknown tokens and for another client's "
    "tokens, which are left alone (§2.1, §2.2). A revocation that ends something is recorded in "
    "the audit trail (`auth.token.revoke`: the session or the service token's `jti`, and the "
    "client; never the token).",
    response_class=Response,  # §2.2: an empty 200
    responses=error_responses(401, oauth=True),
)
async def revoke(
    request: Request,
    services: ServicesDep,
    db: SessionDep,
    ip: ClientIP,
    token: Annotated[str, Form(max_length=8192)] = "",
    token_type_hint: Annotated[str | None, Form(max_length=32)] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> Response:
    # §2.1: the hint only saves a lookup; every kind of token is tried whatever it says.
    tokens = TokenService(db, services.callers, ip)
    requester = await tokens.client(request.headers.get("authorization"), client_id, client_secret)
    await tokens.revoke(token, requester)
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
