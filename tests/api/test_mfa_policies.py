"""Step-up (issue 14): roles that count only with a second factor, the MFA guardrail on
destructive actions, and recent authentication for changing the password or the email."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories import roles as repo
from authsvc.errors import Forbidden
from authsvc.services.container import AppServices
from authsvc.services.stepup import require_recent_auth
from tests.conftest import PASSWORD, Login, MakeUser, MfaLogin, issue_tokens

Headers = dict[str, str]


def claims(headers: Headers) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        headers["Authorization"][7:], options={"verify_signature": False}
    )
    return decoded


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def holder(services: AppServices, make_user: MakeUser, email: str, role: str) -> User:
    user = await make_user(email)
    async with services.sessionmaker() as db:
        found = await repo.get_role(db, role)
        assert found is not None, role
        await repo.assign(db, user.id, found.id)
        await db.commit()
    return user


async def ops_role(client: httpx.AsyncClient, admin: Headers) -> None:
    """``ops``: audit:read of its own, and everything of admin's by inheritance."""
    body = {"name": "ops", "parents": ["admin"], "permissions": ["audit:read"]}
    created = await client.post("/roles", headers=admin, json=body)
    assert created.status_code == 201, created.text


# --- roles that require MFA ----------------------------------------------------------------


async def test_admin_role_counts_only_with_mfa(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    mfa_login: MfaLogin,
) -> None:
    await holder(services, make_user, "boss@example.com", "admin")

    by_password = await login("boss@example.com")
    said = claims(by_password)
    # Not in force: the role is left out of `roles` (the Cedar principal and the decision
    # API read it) and its permissions out of `permissions`; `mfa_withheld` says what a
    # second factor would add.
    assert said["roles"] == [] and said["permissions"] == []
    assert said["mfa_withheld"]["roles"] == ["admin"]
    assert "users:read" in said["mfa_withheld"]["permissions"]
    refused = await client.get("/users", headers=by_password)
    assert refused.status_code == 403
    assert code(refused) == "MFA_REQUIRED"
    assert refused.json()["detail"]["missing"] == ["users:read"]
    # A policy-guarded route (DELETE /users/{id}: rbac.users-delete) says the same.
    victim = await make_user("victim@example.com")
    denied = await client.delete(f"/users/{victim.id}", headers=by_password)
    assert (denied.status_code, code(denied)) == (403, "MFA_REQUIRED")

    with_mfa = await mfa_login("boss@example.com")
    assert claims(with_mfa)["roles"] == ["admin"] and "mfa_withheld" not in claims(with_mfa)
    assert (await client.get("/users", headers=with_mfa)).status_code == 200
    assert (await client.delete(f"/users/{victim.id}", headers=with_mfa)).status_code == 204


async def test_a_role_inheriting_from_admin_likewise(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    mfa_login: MfaLogin,
    mfa_admin_headers: Headers,
) -> None:
    await ops_role(client, mfa_admin_headers)
    await holder(services, make_user, "op@example.com", "ops")

    by_password = await login("op@example.com")
    said = claims(by_password)
    # ops' own permission stays; admin (reached only through admin's gate) does not.
    assert said["roles"] == ["ops"] and said["permissions"] == ["audit:read"]
    assert said["mfa_withheld"]["roles"] == ["admin"]
    assert (await client.get("/audit", headers=by_password)).status_code == 200
    refused = await client.get("/users", headers=by_password)
    assert (refused.status_code, code(refused)) == (403, "MFA_REQUIRED")

    with_mfa = await mfa_login("op@example.com")
    assert claims(with_mfa)["roles"] == ["admin", "ops"]
    assert (await client.get("/users", headers=with_mfa)).status_code == 200


async def test_a_permission_no_role_grants_stays_permission_denied(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("plain@example.com")
    refused = await client.get("/users", headers=await login("plain@example.com"))
    assert (refused.status_code, code(refused)) == (403, "PERMISSION_DENIED")


@pytest.mark.parametrize("settings_overrides", [{"mfa_required_roles": []}])
async def test_no_required_roles_is_the_old_behaviour(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    await holder(services, make_user, "boss@example.com", "admin")
    by_password = await login("boss@example.com")
    assert claims(by_password)["roles"] == ["admin"]
    assert "mfa_withheld" not in claims(by_password)
    assert (await client.get("/users", headers=by_password)).status_code == 200


async def test_the_decision_api_agrees(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    mfa_login: MfaLogin,
) -> None:
    await holder(services, make_user, "boss@example.com", "admin")
    alice = await make_user("alice@example.com")
    ask = {"action": "users:read", "resource": {"type": "User", "id": str(alice.id)}}

    by_password = await login("boss@example.com")
    answer = await client.post("/authz/check", headers=by_password, json=ask)
    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] == "deny"
    # Asking about someone else needs authz:check, which only admin grants here.
    about_alice = {**ask, "principal": {"type": "User", "id": str(alice.id)}}
    other = await client.post("/authz/check", headers=by_password, json=about_alice)
    assert (other.status_code, code(other)) == (403, "MFA_REQUIRED")

    with_mfa = await mfa_login("boss@example.com")
    answer = await client.post("/authz/check", headers=with_mfa, json=ask)
    assert answer.json()["decision"] == "allow"
    # Another principal, named by an admin: no session of theirs is known, so no second
    # factor: their admin role is not in force, as in their own password-signed tokens.
    deputy = await holder(services, make_user, "deputy@example.com", "admin")
    about_deputy = {**ask, "principal": {"type": "User", "id": str(deputy.id)}}
    answer = await client.post("/authz/check", headers=with_mfa, json=about_deputy)
    assert answer.json()["decision"] == "deny"


async def test_refresh_keeps_the_sessions_factors(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser
) -> None:
    await holder(services, make_user, "boss@example.com", "admin")
    for amr, roles in ((("pwd",), []), (("pwd", "otp", "mfa"), ["admin"])):
        issued = await issue_tokens(services, "boss@example.com", amr=amr)
        refreshed = await client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": issued.refresh_token},
        )
        assert refreshed.status_code == 200, refreshed.text
        headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
        assert claims(headers)["roles"] == roles
        assert claims(headers)["amr"] == list(amr)
        expected = 200 if roles else 403
        assert (await client.get("/users", headers=headers)).status_code == expected


# --- the guardrail: destructive actions need MFA, superusers included -----------------------


async def test_destructive_actions_need_mfa_even_for_a_superuser(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: Headers,
    mfa_admin_headers: Headers,
) -> None:
    victim = await make_user("victim@example.com")
    created = await client.post("/roles", headers=admin_headers, json={"name": "doomed"})
    assert created.status_code == 201, created.text

    for path in (f"/users/{victim.id}", "/roles/doomed"):
        refused = await client.delete(path, headers=admin_headers)
        assert (refused.status_code, code(refused)) == (403, "MFA_REQUIRED"), refused.text
        assert refused.json()["detail"]["policies"] == ["guardrail.destructive-needs-mfa"]
        assert (await client.delete(path, headers=mfa_admin_headers)).status_code == 204
    # Reading is not destructive: the superuser's password session still reads.
    assert (await client.get("/users", headers=admin_headers)).status_code == 200


# --- recent authentication -----------------------------------------------------------------


def _ago(seconds: int) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "change",
    [
        {"password": "a brand new passphrase", "current_password": PASSWORD},
        {"email": "moved@example.com", "current_password": PASSWORD},
    ],
    ids=["password", "email"],
)
async def test_changing_password_or_email_needs_a_recent_sign_in(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    mfa_login: MfaLogin,
    change: dict[str, str],
) -> None:
    await make_user("me@example.com")
    stale = await mfa_login("me@example.com", amr=("pwd",), auth_time=_ago(301))
    refused = await client.patch("/users/me", headers=stale, json=change)
    assert (refused.status_code, code(refused)) == (403, "REAUTH_REQUIRED"), refused.text
    assert "sign in again" in refused.json()["detail"]["message"].lower()
    # Nothing else is refused for age: the same token reads, and changes nothing else.
    assert (await client.get("/users/me", headers=stale)).status_code == 200

    fresh = await mfa_login("me@example.com", amr=("pwd",), auth_time=_ago(5))
    done = await client.patch("/users/me", headers=fresh, json=change)
    assert done.status_code == 200, done.text


async def test_withdrawing_nothing_needs_no_recent_sign_in(
    client: httpx.AsyncClient, make_user: MakeUser, mfa_login: MfaLogin
) -> None:
    """A body that changes neither password nor email (an empty one) is not held back."""
    await make_user("me@example.com")
    stale = await mfa_login("me@example.com", amr=("pwd",), auth_time=_ago(3600))
    assert (await client.patch("/users/me", headers=stale, json={})).status_code == 200


async def test_the_admin_route_on_oneself_needs_it_too(
    client: httpx.AsyncClient, make_user: MakeUser, mfa_login: MfaLogin
) -> None:
    """PATCH /users/{own id} (the own-profile policy) is the same self-service change."""
    me = await make_user("me@example.com")
    stale = await mfa_login("me@example.com", amr=("pwd",), auth_time=_ago(301))
    change = {"password": "a brand new passphrase", "current_password": PASSWORD}
    refused = await client.patch(f"/users/{me.id}", headers=stale, json=change)
    assert (refused.status_code, code(refused)) == (403, "REAUTH_REQUIRED"), refused.text
    fresh = await mfa_login("me@example.com", amr=("pwd",))
    assert (await client.patch(f"/users/{me.id}", headers=fresh, json=change)).status_code == 200


async def test_a_token_without_auth_time_is_not_recent(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser
) -> None:
    """Tokens issued before they carried auth_time: sign in again."""
    me = await make_user("me@example.com")
    issued = await issue_tokens(services, "me@example.com", amr=("pwd",))
    said = services.codec.verify(issued.access_token)
    extra = {k: v for k, v in said.items() if k in ("roles", "permissions", "ver", "sid", "amr")}
    old = services.codec.issue(str(me.id), extra=extra).token
    change = {"password": "a brand new passphrase", "current_password": PASSWORD}
    refused = await client.patch(
        "/users/me", headers={"Authorization": f"Bearer {old}"}, json=change
    )
    assert (refused.status_code, code(refused)) == (403, "REAUTH_REQUIRED"), refused.text


def test_recent_means_at_most_max_age() -> None:
    """The window's edges, without a clock: ``now`` is given."""
    signed_in = Principal(user_id=uuid.uuid4(), auth_time=1_000)
    require_recent_auth(signed_in, 300, 1_300)  # exactly 300 s: still recent
    for principal, now in ((signed_in, 1_301), (Principal(user_id=uuid.uuid4()), 1_000)):
        with pytest.raises(Forbidden) as refused:
            require_recent_auth(principal, 300, now)
        assert refused.value.code == "REAUTH_REQUIRED"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/users/me/mfa/totp", None),
        ("POST", "/users/me/mfa/totp/confirm", {"code": "123456"}),
        ("DELETE", "/users/me/mfa/totp", {"code": "123456"}),
        ("POST", "/users/me/mfa/recovery-codes", {"code": "123456"}),
    ],
)
async def test_changing_second_factors_needs_a_recent_sign_in(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    mfa_login: MfaLogin,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    """A stolen access token an hour old must not be enough to add, confirm, remove or renew
    a second factor: the issue's recent-authentication check, as on password and email."""
    await make_user("factors@example.com")
    stale = await mfa_login("factors@example.com", amr=("pwd",), auth_time=_ago(3600))
    refused = await client.request(method, path, headers=stale, json=body)
    assert (refused.status_code, code(refused)) == (403, "REAUTH_REQUIRED"), refused.text
    # Nothing was started on the way.
    status = await client.get("/users/me/mfa", headers=stale)
    assert status.status_code == 200 and status.json()["totp"] == "none"
