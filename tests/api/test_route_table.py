"""The README's route table is generated from the code; this keeps the two equal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI

from authsvc.api.guards import require_permissions, require_roles
from authsvc.api.routes_table import render_routes_table
from authsvc.authz.engine import Principal
from authsvc.services.container import AppServices
from authsvc.services.roles import sync_builtin
from tests.conftest import Login, MakeUser

README = Path(__file__).resolve().parents[2] / "README.md"
# Routes for any signed-in user, about themselves: no permission needed.
SIGNED_IN = {
    "/users/me", "/users/me/sessions", "/users/me/sessions/{session_id}", "/auth/logout",
    "/auth/logout-all", "/authz/check", "/authz/check/batch",
    # One's own second factor (issue 14).
    "/users/me/mfa", "/users/me/mfa/totp", "/users/me/mfa/totp/confirm",
    "/users/me/mfa/recovery-codes",
}  # fmt: skip


def test_readme_route_table_matches_the_code(app: FastAPI) -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- routes:start -->\n(.*?)<!-- routes:end -->", text, re.S)
    assert found, "README.md lacks the routes:start/routes:end markers"
    assert found.group(1) == render_routes_table(app), "run `authsvc routes` and paste it"


def test_every_route_is_public_signed_in_or_permission_guarded(app: FastAPI) -> None:
    public = {
        "/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/auth/token", "/auth/register", "/auth/introspect", "/auth/revoke", "/metrics",
        "/auth/request-verify-token", "/auth/verify", "/auth/forgot-password",
        "/auth/reset-password", "/auth/revert-email", "/auth/confirm-email",
    }  # fmt: skip
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            scopes = [s for req in operation.get("security", []) for s in req.values()]
            if path in public:
                assert not scopes, (method, path)
            elif operation.get("x-authsvc-policy-action"):
                assert scopes == [[]], f"{method} {path}: policy routes need a signed-in user"
            elif path not in SIGNED_IN:
                assert scopes and all(scopes), f"{method} {path} has no permission guard"


def test_undeclared_permission_names_are_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        require_permissions("users:raed")


async def test_require_roles(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    @app.get("/only-admins")
    async def only_admins(principal: Annotated[Principal, require_roles("admin")]) -> str:
        return str(principal.email)

    await make_user("nobody@example.com")
    assert (await client.get("/only-admins")).status_code == 401
    denied = await client.get("/only-admins", headers=await login("nobody@example.com"))
    assert denied.status_code == 403
    assert denied.json()["detail"]["missing_roles"] == ["admin"]
    await make_user("boss@example.com", is_superuser=True)
    allowed = await client.get("/only-admins", headers=await login("boss@example.com"))
    assert allowed.status_code == 200 and allowed.json() == "boss@example.com"


async def test_start_up_restores_builtin_permissions(services: AppServices) -> None:
    from sqlalchemy import delete, select

    from authsvc.db.models import Permission
    from authsvc.db.repositories.roles import load_graph

    async with services.sessionmaker() as session:
        await session.execute(delete(Permission).where(Permission.name == "audit:read"))
        await session.commit()
        await sync_builtin(session, "user")
        names = set(await session.scalars(select(Permission.name)))
        graph = await load_graph(session)
    assert "audit:read" in names
    assert "audit:read" in graph.nodes["admin"].permissions
    async with services.sessionmaker() as session:
        with pytest.raises(RuntimeError, match="AUTHSVC_DEFAULT_ROLE"):
            await sync_builtin(session, "no-such-role")


async def test_concurrent_start_ups_declare_each_permission_once(services: AppServices) -> None:
    import asyncio

    from sqlalchemy import delete, func, select

    from authsvc.db.models import Permission

    async with services.sessionmaker() as session:
        await session.execute(delete(Permission).where(Permission.name.startswith("keys:")))
        await session.commit()
    async with services.sessionmaker() as first, services.sessionmaker() as second:
        await asyncio.gather(sync_builtin(first, "user"), sync_builtin(second, "user"))
    async with services.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Permission).where(Permission.name.startswith("keys:"))
        )
    assert count == 2
