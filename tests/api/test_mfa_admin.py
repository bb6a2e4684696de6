"""Issue 14, the admin side of second factors: ``GET``/``DELETE /users/{user_id}/mfa``.

The rows are inserted directly (the TOTP and recovery-code logic is not needed to see or
reset them; the ``secret`` column is opaque here). Mail goes through the console notifier.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from authsvc.db.models import AuditEvent, MfaChallenge, RecoveryCode, TotpFactor, User
from authsvc.services import audit
from authsvc.services.container import AppServices
from tests.api.test_escalation import grant_role, set_attributes
from tests.conftest import Login, MakeUser, delivered

SUBJECT = "The second factor of your account was removed"
NOTHING = {"totp": "none", "enabled_at": None, "recovery_codes_remaining": 0}


async def enrol(
    services: AppServices,
    user: User,
    *,
    confirmed: bool = True,
    codes: int = 10,
    used: int = 0,
    challenges: int = 1,
) -> datetime:
    """A factor (confirmed or pending), ``codes`` recovery codes of which ``used`` are spent,
    and ``challenges`` open sign-in challenges plus one spent. The confirmation time."""
    now = datetime.now(UTC).replace(microsecond=0)
    confirmed_at = now - timedelta(days=3)
    async with services.sessionmaker() as db:
        db.add(
            TotpFactor(
                user_id=user.id,
                secret="opaque-ciphertext",
                confirmed_at=confirmed_at if confirmed else None,
            )
        )
        for number in range(codes):
            spent = now - timedelta(days=1) if number < used else None
            db.add(RecoveryCode(user_id=user.id, code_hash=secrets.token_hex(32), used_at=spent))
        for number in range(challenges + 1):
            db.add(
                MfaChallenge(
                    user_id=user.id,
                    client_id="authsvc",
                    expires_at=now + timedelta(minutes=5),
                    used_at=now if number == challenges else None,
                )
            )
        await db.commit()
    return confirmed_at


async def counts(services: AppServices, user_id: uuid.UUID) -> dict[str, int]:
    """The user's rows of each kind (challenges: the open ones and all)."""
    async with services.sessionmaker() as db:

        async def count(model: Any, *where: Any) -> int:
            query = select(func.count()).select_from(model).where(model.user_id == user_id)
            return int(await db.scalar(query.where(*where)) or 0)

        return {
            "factors": await count(TotpFactor),
            "codes": await count(RecoveryCode),
            "open_challenges": await count(MfaChallenge, MfaChallenge.used_at.is_(None)),
            "challenges": await count(MfaChallenge),
        }


async def events(services: AppServices, action: str) -> list[AuditEvent]:
    async with services.sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.action == action)
        return list((await db.execute(query)).scalars())


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def test_the_admin_view_of_none_pending_and_enabled(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    services: AppServices,
) -> None:
    nobody = await make_user("nobody@example.com")
    view = await client.get(f"/users/{nobody.id}/mfa", headers=admin_headers)
    assert view.status_code == 200, view.text
    assert view.json() == NOTHING

    halfway = await make_user("halfway@example.com")
    await enrol(services, halfway, confirmed=False, codes=0)
    view = await client.get(f"/users/{halfway.id}/mfa", headers=admin_headers)
    assert view.json() == {"totp": "pending", "enabled_at": None, "recovery_codes_remaining": 0}

    enrolled = await make_user("enrolled@example.com")
    confirmed_at = await enrol(services, enrolled, used=3)
    view = await client.get(f"/users/{enrolled.id}/mfa", headers=admin_headers)
    body = view.json()
    assert body["totp"] == "enabled" and body["recovery_codes_remaining"] == 7
    assert datetime.fromisoformat(body["enabled_at"]) == confirmed_at


async def test_reset_removes_everything_in_one_go_audited_and_mailed(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    admin_headers: dict[str, str],
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = await make_user("lost-phone@example.com")
    # Signed in (by password) before the factor exists: a factor makes sign-in two steps.
    owner_headers = await login("lost-phone@example.com")
    confirmed_at = await enrol(services, owner, used=2, challenges=2)
    bystander = await make_user("bystander@example.com")
    await enrol(services, bystander)
    capsys.readouterr()

    reset = await client.delete(f"/users/{owner.id}/mfa", headers=admin_headers)
    assert reset.status_code == 204, reset.text
    assert reset.content == b""
    left = await counts(services, owner.id)
    # The spent challenge stays (it opens nothing); everything that could still be used goes.
    assert left == {"factors": 0, "codes": 0, "open_challenges": 0, "challenges": 1}
    assert await counts(services, bystander.id) == {
        "factors": 1, "codes": 10, "open_challenges": 1, "challenges": 2,
    }  # fmt: skip
    view = await client.get(f"/users/{owner.id}/mfa", headers=admin_headers)
    assert view.json() == NOTHING

    [event] = await events(services, audit.MFA_RESET)
    assert event.actor_email == "admin@example.com"
    assert (event.target_type, event.target_id) == ("user", str(owner.id))
    assert event.before == {
        "totp": "enabled",
        "enabled_at": confirmed_at.isoformat(),
        "recovery_codes_remaining": 8,
    }
    assert event.after == {
        "totp": "none", "recovery_codes_remaining": 0, "challenges_ended": 2, "sessions_ended": 0,
    }  # fmt: skip

    out = await delivered(services, capsys)
    assert out.count(f"--- mail to lost-phone@example.com: {SUBJECT} ---") == 1
    assert "If you did not ask for it, contact them" in out
    assert "bystander@example.com" not in out

    # A lost phone is no reason to sign the owner out: the session stays (to enrol anew).
    assert (await client.get("/users/me", headers=owner_headers)).status_code == 200

    # Nothing left to reset: said so, and neither a second event nor a second mail.
    again = await client.delete(f"/users/{owner.id}/mfa", headers=admin_headers)
    assert again.status_code == 404, again.text
    assert code(again) == "MFA_NOT_ENROLLED"
    assert len(await events(services, audit.MFA_RESET)) == 1
    assert SUBJECT not in await delivered(services, capsys)


async def test_a_pending_enrolment_alone_is_reset_too(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    services: AppServices,
) -> None:
    halfway = await make_user("halfway@example.com")
    await enrol(services, halfway, confirmed=False, codes=0, challenges=0)
    reset = await client.delete(f"/users/{halfway.id}/mfa", headers=admin_headers)
    assert reset.status_code == 204, reset.text
    assert (await counts(services, halfway.id))["factors"] == 0
    [event] = await events(services, audit.MFA_RESET)
    assert event.before == {"totp": "pending", "enabled_at": None, "recovery_codes_remaining": 0}


async def test_a_suspected_takeover_ends_every_session_with_the_factor(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    admin_headers: dict[str, str],
    services: AppServices,
) -> None:
    victim = await make_user("victim@example.com")
    # Two sessions signed in by password before the factor exists (a factor makes sign-in
    # two steps); the rows are then written directly.
    taker = await login("victim@example.com")
    tokens = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "victim@example.com",
              "password": "correct horse battery staple"},
    )  # fmt: skip
    await enrol(services, victim)
    refresh = tokens.json()["refresh_token"]

    reset = await client.delete(
        f"/users/{victim.id}/mfa", params={"end_sessions": "true"}, headers=admin_headers
    )
    assert reset.status_code == 204, reset.text
    assert (await client.get("/users/me", headers=taker)).status_code == 401
    refreshed = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert refreshed.status_code == 400, refreshed.text
    [event] = await events(services, audit.MFA_RESET)
    assert event.after is not None and event.after["sessions_ended"] == 2
    # The administrator's own session is untouched.
    assert (await client.get("/users/me", headers=admin_headers)).status_code == 200


async def test_who_may_see_and_reset(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    admin_headers: dict[str, str],
    services: AppServices,
) -> None:
    target = await make_user("target@example.com")
    await set_attributes(services, target, department="sales")
    await enrol(services, target)
    path = f"/users/{target.id}/mfa"

    assert (await client.get(path)).status_code == 401
    assert (await client.delete(path)).status_code == 401

    plain_user = await make_user("plain@example.com")
    plain = await login("plain@example.com")
    for response in (
        await client.get(path, headers=plain),
        await client.delete(path, headers=plain),
    ):
        assert response.status_code == 403, response.text
    # Not even one's own: this is the administrator's view (the owner's is under /users/me).
    own = await client.get(f"/users/{plain_user.id}/mfa", headers=plain)
    assert own.status_code == 403

    # A department admin reads and edits profiles in their department through the policies,
    # but seeing and removing second factors needs the users:* permissions: refused outside
    # their department, and inside it as well.
    for department in ("board", "sales"):
        email = f"dana-{department}@example.com"
        dana = await make_user(email)
        await grant_role(services, dana, "department_admin")
        await set_attributes(services, dana, department=department)
        dana_headers = await login(email)
        viewed = await client.get(path, headers=dana_headers)
        reset = await client.delete(path, headers=dana_headers)
        assert (viewed.status_code, reset.status_code) == (403, 403), (department, reset.text)
    assert (await counts(services, target.id))["factors"] == 1
    assert await events(services, audit.MFA_RESET) == []

    # The permissions without their policy: the user-target policy decides on the account.
    assert (await client.get(path, headers=admin_headers)).status_code == 200


async def test_a_user_admin_cannot_reset_a_more_powerful_account(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    helpdesk = await make_user("helpdesk@example.com")
    await grant_role(services, helpdesk, "helpdesk", ("users:read", "users:write"))
    headers = await login("helpdesk@example.com")
    root = await make_user("root@example.com", is_superuser=True)
    await enrol(services, root)
    staff = await make_user("staff@example.com")
    await enrol(services, staff)

    # Removing a superuser's second factor would leave its password alone standing guard.
    assert (await client.get(f"/users/{root.id}/mfa", headers=headers)).status_code == 200
    refused = await client.delete(f"/users/{root.id}/mfa", headers=headers)
    assert refused.status_code == 403, refused.text
    assert code(refused) == "PERMISSION_DENIED"
    assert await counts(services, root.id) == {
        "factors": 1, "codes": 10, "open_challenges": 1, "challenges": 2,
    }  # fmt: skip
    assert await events(services, audit.MFA_RESET) == []
    assert SUBJECT not in await delivered(services, capsys)

    allowed = await client.delete(f"/users/{staff.id}/mfa", headers=headers)
    assert allowed.status_code == 204, allowed.text


async def test_unknown_and_malformed_ids(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    missing = f"/users/{uuid.uuid4()}/mfa"
    for response in (
        await client.get(missing, headers=admin_headers),
        await client.delete(missing, headers=admin_headers),
    ):
        assert response.status_code == 404, response.text
        assert code(response) == "USER_NOT_FOUND"
    # As on every /users/{user_id} route, the id is a UUID in the path itself: anything else
    # names no route (404 NOT_FOUND, tests/api/test_users.py), so "/users/me/mfa" can never be
    # read as a user id.
    for bad in ("not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g"):
        response = await client.delete(f"/users/{bad}/mfa", headers=admin_headers)
        assert response.status_code == 404, response.text
        assert code(response) == "NOT_FOUND"
    someone = await make_user("someone@example.com")
    flag = await client.delete(
        f"/users/{someone.id}/mfa", params={"end_sessions": "perhaps"}, headers=admin_headers
    )
    assert flag.status_code == 422, flag.text
    assert code(flag) == "VALIDATION_ERROR"
