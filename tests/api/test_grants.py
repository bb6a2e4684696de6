"""The token endpoint's grants: one transaction per grant, claims from one query."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, NoReturn

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select

from authsvc.authz.engine import token_permissions
from authsvc.db.models import (
    OAuthClient,
    Permission,
    RefreshToken,
    Role,
    Session,
    User,
    role_parents,
    role_permissions,
    user_roles,
)
from authsvc.db.repositories import roles as roles_repo
from authsvc.services.claims import grants_for
from authsvc.services.container import AppServices
from authsvc.services.grants import (
    ClientCredentialsGrant,
    GrantContext,
    GrantRegistry,
    PasswordGrant,
    RefreshTokenGrant,
    TokenRequest,
)
from authsvc.services.issuer import IssuedTokens
from tests.conftest import PASSWORD, TEST_CLIENT_IP, MakeUser


def password_form(email: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": PASSWORD}


@pytest.fixture
async def lenient_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sees the 500 the app answers instead of the exception behind it."""
    transport = httpx.ASGITransport(
        app=app, client=(TEST_CLIENT_IP, 50000), raise_app_exceptions=False
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def _signing_fails(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise RuntimeError("the signing key is unavailable")


async def _count(services: AppServices, model: type[Any]) -> int:
    async with services.sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


# --- one transaction: nothing committed until the access token is signed ---------------------


async def test_a_signing_failure_on_login_leaves_no_session(
    lenient_client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_user("sign@example.com")
    monkeypatch.setattr(services.codec, "issue", _signing_fails)
    response = await lenient_client.post("/auth/token", data=password_form("sign@example.com"))
    assert response.status_code == 500
    assert response.json()["detail"]["code"] == "INTERNAL_ERROR"
    # A session nobody received would be listed, and could be refreshed by nobody.
    assert await _count(services, Session) == 0
    assert await _count(services, RefreshToken) == 0


async def test_a_signing_failure_on_refresh_leaves_the_token_unspent(
    lenient_client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_user("spent@example.com")
    signed_in = await lenient_client.post("/auth/token", data=password_form("spent@example.com"))
    presented = signed_in.json()["refresh_token"]
    refresh = {"grant_type": "refresh_token", "refresh_token": presented}

    with monkeypatch.context() as patch:
        patch.setattr(services.codec, "issue", _signing_fails)
        failed = await lenient_client.post("/auth/token", data=refresh)
    assert failed.status_code == 500
    async with services.sessionmaker() as db:
        (stored,) = (await db.scalars(select(RefreshToken))).all()
    assert stored.used_at is None  # not spent: the client never got its successor
    assert stored.reuse_count == 0

    again = await lenient_client.post("/auth/token", data=refresh)
    assert again.status_code == 200, again.text
    assert await _count(services, RefreshToken) == 2


async def test_metrics_count_only_tokens_handed_out(
    lenient_client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_user("metric@example.com")
    tokens = services.metrics.tokens.labels("password")
    before = tokens._value.get()
    with monkeypatch.context() as patch:
        patch.setattr(services.codec, "issue", _signing_fails)
        failed = await lenient_client.post("/auth/token", data=password_form("metric@example.com"))
    assert failed.status_code == 500
    assert tokens._value.get() == before
    ok = await lenient_client.post("/auth/token", data=password_form("metric@example.com"))
    assert ok.status_code == 200
    assert tokens._value.get() == before + 1


# --- a user's claims from one query --------------------------------------------------------


async def _role(db: Any, name: str, permissions: list[str], parents: list[uuid.UUID]) -> uuid.UUID:
    role = Role(name=name)
    db.add(role)
    await db.flush()
    for permission in permissions:
        found = await db.scalar(select(Permission).where(Permission.name == permission))
        if found is None:
            found = Permission(name=permission)
            db.add(found)
            await db.flush()
        await db.execute(insert(role_permissions).values(role_id=role.id, permission_id=found.id))
    for parent in parents:
        await db.execute(insert(role_parents).values(role_id=role.id, parent_id=parent))
    return role.id


async def _hierarchy(services: AppServices) -> dict[str, uuid.UUID]:
    """A multi-level hierarchy: a 12-deep chain, a diamond, wildcards, a role nobody holds."""
    ids: dict[str, uuid.UUID] = {}
    async with services.sessionmaker() as db:
        ids["reader"] = await _role(db, "reader", ["docs:read"], [])
        ids["writer"] = await _role(db, "writer", ["docs:write", "docs:read"], [ids["reader"]])
        ids["auditor"] = await _role(db, "auditor", ["audit:read", "reports:*"], [ids["reader"]])
        # A diamond: editor inherits reader twice (through writer and auditor).
        ids["editor"] = await _role(db, "editor", ["docs:*"], [ids["writer"], ids["auditor"]])
        below = ids["editor"]
        for level in range(12):
            below = await _role(db, f"level-{level}", [f"svc{level}:run"], [below])
            ids[f"level-{level}"] = below
        ids["unrelated"] = await _role(db, "unrelated", ["billing:*"], [])
        ids["empty"] = await _role(db, "empty", [], [ids["reader"]])
        await db.commit()
    return ids


async def _assign(services: AppServices, user: User, *role_ids: uuid.UUID) -> None:
    async with services.sessionmaker() as db:
        for role_id in role_ids:
            await db.execute(insert(user_roles).values(user_id=user.id, role_id=role_id))
        await db.commit()


async def _from_graph(services: AppServices, user_id: uuid.UUID) -> tuple[list[str], list[str]]:
    """The claims as computed before: the whole role graph, walked in Python."""
    async with services.sessionmaker() as db:
        user = await db.get(User, user_id)
        assert user is not None
        graph = await roles_repo.load_graph(db)
        assigned = await roles_repo.user_role_names(db, user_id)
    roles = sorted(graph.effective_roles(assigned))
    return roles, token_permissions(user.is_superuser, graph.effective(assigned))


async def _from_grants_for(services: AppServices, user_id: uuid.UUID) -> tuple[Any, int]:
    async with services.sessionmaker() as db:
        user = await db.get(User, user_id)
        assert user is not None
        with count_statements(services) as statements:
            grants = await grants_for(db, user)
    return grants, len(statements)


@contextmanager
def count_statements(services: AppServices) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    target = services.engine.sync_engine
    event.listen(target, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(target, "before_cursor_execute", record)


@pytest.mark.parametrize("superuser", [False, True], ids=["user", "superuser"])
async def test_claims_from_one_query_match_the_role_graph(
    services: AppServices, make_user: MakeUser, superuser: bool
) -> None:
    ids = await _hierarchy(services)
    user = await make_user(f"deep-{superuser}@example.com", is_superuser=superuser)
    await _assign(services, user, ids["level-11"], ids["empty"])

    grants, statements = await _from_grants_for(services, user.id)
    roles, permissions = await _from_graph(services, user.id)
    assert (grants.roles, grants.permissions) == (roles, permissions)
    assert statements == 1
    assert "unrelated" not in grants.roles
    if superuser:
        assert grants.permissions == ["*"]
    else:
        assert {"docs:*", "reports:*", "svc0:run", "svc11:run"} <= set(grants.permissions)
        assert len(grants.roles) == 12 + 5  # the chain, editor, writer, auditor, reader, empty


async def test_a_user_without_roles_has_empty_claims(
    services: AppServices, make_user: MakeUser
) -> None:
    user = await make_user("bare@example.com")
    grants, statements = await _from_grants_for(services, user.id)
    assert (grants.roles, grants.permissions, grants.version) == ([], [], 0)
    assert statements == 1


async def test_the_version_is_read_with_the_roles(
    services: AppServices, make_user: MakeUser
) -> None:
    """The ``ver`` claim is the one the roles were read under, not a stale in-memory copy."""
    user = await make_user("ver@example.com")
    async with services.sessionmaker() as db:
        stale = await db.get(User, user.id)
        assert stale is not None
        async with services.sessionmaker() as other:
            await roles_repo.bump_versions(other, user_ids=[user.id])
            await other.commit()
        grants = await grants_for(db, stale)
    assert grants.version == 1


async def test_a_parent_cycle_in_the_data_still_terminates(
    services: AppServices, make_user: MakeUser
) -> None:
    """Cycles are refused at write time (ROLE_CYCLE); the query must end on one anyway."""
    async with services.sessionmaker() as db:
        first = await _role(db, "ring-a", ["ring:a"], [])
        second = await _role(db, "ring-b", ["ring:b"], [first])
        await db.execute(insert(role_parents).values(role_id=first, parent_id=second))
        await db.commit()
    user = await make_user("ring@example.com")
    await _assign(services, user, first)
    grants, _ = await _from_grants_for(services, user.id)
    assert (grants.roles, grants.permissions) == (["ring-a", "ring-b"], ["ring:a", "ring:b"])


async def test_tokens_carry_the_claims_of_the_graph(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser
) -> None:
    ids = await _hierarchy(services)
    user = await make_user("claims@example.com")
    await _assign(services, user, ids["level-5"], ids["unrelated"])
    response = await client.post("/auth/token", data=password_form("claims@example.com"))
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    roles, permissions = await _from_graph(services, user.id)
    assert (claims["roles"], claims["permissions"]) == (roles, permissions)
    assert claims["ver"] == 0 and "sid" in claims

    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"]},
    )
    again = jwt.decode(refreshed.json()["access_token"], options={"verify_signature": False})
    assert (again["roles"], again["permissions"], again["sid"]) == (
        roles, permissions, claims["sid"]
    )  # fmt: skip


async def test_statements_per_grant(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """How many SQL statements a password grant and a refresh grant run (printed for the
    record; the claims themselves take one, see above)."""
    ids = await _hierarchy(services)
    user = await make_user("count@example.com")
    await _assign(services, user, ids["level-3"])
    with count_statements(services) as login:
        response = await client.post("/auth/token", data=password_form("count@example.com"))
    assert response.status_code == 200
    refresh = {"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"]}
    with count_statements(services) as rotation:
        refreshed = await client.post("/auth/token", data=refresh)
    assert refreshed.status_code == 200
    with capsys.disabled():
        print(
            f"\n[{services.engine.dialect.name}] statements: password grant {len(login)}, "
            f"refresh grant {len(rotation)}"
        )


# --- grants are plug-ins ----------------------------------------------------------------------


class DemoGrant:
    """An extension grant (RFC 6749 §4.5) as a later module would add one."""

    grant_type = "urn:example:params:oauth:grant-type:demo"

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        name = request.required("demo_client", 64)
        return await context.issuer.for_client(OAuthClient(id=name, name=name, permissions=[]))


def with_grants(app: FastAPI, registry: GrantRegistry) -> AppServices:
    services: AppServices = app.state.services
    app.state.services = replace(services, grants=registry)
    return services


async def test_a_new_grant_is_one_class_and_one_registry_entry(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    services = with_grants(
        app,
        GrantRegistry(
            [PasswordGrant(), RefreshTokenGrant(), ClientCredentialsGrant(), DemoGrant()]
        ),
    )
    form = {"grant_type": DemoGrant.grant_type, "demo_client": "svc-demo"}
    response = await client.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert "refresh_token" not in response.json()
    claims = services.codec.verify(response.json()["access_token"])
    assert (claims["sub"], claims["client_id"]) == ("svc-demo", "svc-demo")
    assert services.metrics.tokens.labels(DemoGrant.grant_type)._value.get() == 1

    missing = await client.post("/auth/token", data={"grant_type": DemoGrant.grant_type})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    assert "demo_client" in missing.json()["error_description"]

    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["grant_types_supported"][-1] == DemoGrant.grant_type


async def test_an_unregistered_grant_is_unsupported(
    app: FastAPI, client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    with_grants(app, GrantRegistry([RefreshTokenGrant()]))
    await make_user("no-password@example.com")
    response = await client.post("/auth/token", data=password_form("no-password@example.com"))
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert response.json()["detail"]["code"] == "UNSUPPORTED_GRANT_TYPE"


def test_a_grant_type_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        GrantRegistry([PasswordGrant(), PasswordGrant()])
