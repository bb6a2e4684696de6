"""The security trail for sessions, tokens and policies (issue 13): logout, session revocation,
refresh-token reuse alarms, RFC 7009 revocation and policy reloads each leave one audit event
with its actor, target and client IP, and nothing secret in it; an alarm commits although the
request that raised it answers an error."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from authsvc.config import Settings
from authsvc.db.models import AuditEvent, RefreshToken, User, utcnow
from authsvc.main import create_app
from authsvc.services import audit
from authsvc.services.container import AppServices
from tests.api.test_oauth import basic, register_client
from tests.conftest import PASSWORD, TEST_CLIENT_IP, MakeUser

Headers = dict[str, str]
Tokens = dict[str, Any]
ADMIN = "admin@example.com"  # conftest's admin_headers signs this superuser in


async def sign_in(client: httpx.AsyncClient, email: str) -> Tokens:
    form = {"grant_type": "password", "username": email, "password": PASSWORD}
    response = await client.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    tokens: Tokens = response.json()
    return tokens


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return await client.post("/auth/token", data=form)


def bearer(tokens: Tokens) -> Headers:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def sid(tokens: Tokens) -> str:
    return str(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"])


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def events(services: AppServices, action: str) -> list[AuditEvent]:
    """The committed events of one kind, read on a connection of their own."""
    async with services.sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.at)
        return list((await db.scalars(query)).all())


async def the_event(services: AppServices, action: str) -> AuditEvent:
    found = await events(services, action)
    assert len(found) == 1, [(e.action, e.after) for e in found]
    return found[0]


async def assert_no_secret_in_trail(services: AppServices, *secrets: str) -> None:
    """No token, password or client secret, nor a long piece of one, in any column of any
    event (a prefix or suffix of a token is as bad as the token)."""
    async with services.sessionmaker() as db:
        rows = (await db.scalars(select(AuditEvent))).all()
    assert rows, "the trail is empty"
    for row in rows:
        text = repr({c.key: getattr(row, c.key) for c in AuditEvent.__table__.columns})
        for secret in secrets:
            assert secret and secret not in text, (row.action, secret[:8])
            for piece in (secret[:16], secret[-16:]):
                assert piece not in text, (row.action, piece)


async def user_id(services: AppServices, email: str) -> uuid.UUID:
    async with services.sessionmaker() as db:
        found = await db.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return found


# --- logout and session revocation -----------------------------------------------------------


async def test_logout_records_this_session_ending(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    user = await make_user("out@example.com")
    tokens = await sign_in(client, "out@example.com")
    assert (await client.post("/auth/logout", headers=bearer(tokens))).status_code == 204

    event = await the_event(services, audit.LOGOUT)
    assert (event.actor_id, event.actor_email) == (user.id, "out@example.com")
    assert (event.target_type, event.target_id) == ("user", str(user.id))
    assert event.before is None
    assert event.after == {"session_id": sid(tokens), "scope": "this"}
    assert event.client_ip == TEST_CLIENT_IP
    await assert_no_secret_in_trail(
        services, tokens["access_token"], tokens["refresh_token"], PASSWORD
    )


async def test_logout_everywhere_records_how_many_sessions_ended(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    user = await make_user("all@example.com")
    other = await sign_in(client, "all@example.com")
    tokens = await sign_in(client, "all@example.com")
    assert (await client.post("/auth/logout-all", headers=bearer(tokens))).status_code == 204

    event = await the_event(services, audit.LOGOUT)
    assert (event.actor_id, event.target_type, event.target_id) == (user.id, "user", str(user.id))
    assert event.after == {"session_id": sid(tokens), "scope": "all", "ended": 2}
    assert event.client_ip == TEST_CLIENT_IP
    await assert_no_secret_in_trail(
        services, *(t[k] for t in (other, tokens) for k in ("access_token", "refresh_token"))
    )


async def test_ending_one_of_my_sessions_is_recorded_and_a_refused_one_is_not(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    user = await make_user("mine@example.com")
    phone = await sign_in(client, "mine@example.com")
    laptop = await sign_in(client, "mine@example.com")
    ended = await client.delete(f"/users/me/sessions/{sid(phone)}", headers=bearer(laptop))
    assert ended.status_code == 204
    again = await client.delete(f"/users/me/sessions/{sid(phone)}", headers=bearer(laptop))
    assert again.status_code == 404  # already ended: nothing more to record
    missing = await client.delete(f"/users/me/sessions/{uuid.uuid4()}", headers=bearer(laptop))
    assert missing.status_code == 404

    event = await the_event(services, audit.SESSION_REVOKED)
    assert (event.actor_id, event.actor_email) == (user.id, "mine@example.com")
    assert (event.target_type, event.target_id) == ("user", str(user.id))
    assert event.after == {"session_id": sid(phone), "scope": "one"}
    assert event.client_ip == TEST_CLIENT_IP
    await assert_no_secret_in_trail(services, phone["refresh_token"], laptop["access_token"])


async def test_an_admin_ending_a_users_sessions_is_recorded_once(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices, admin_headers: Headers
) -> None:
    user = await make_user("ended@example.com")
    tokens = await sign_in(client, "ended@example.com")
    response = await client.delete(f"/users/{user.id}/sessions", headers=admin_headers)
    assert response.status_code == 204

    event = await the_event(services, audit.SESSION_REVOKED)
    assert (event.actor_id, event.actor_email) == (await user_id(services, ADMIN), ADMIN)
    assert (event.target_type, event.target_id) == ("user", str(user.id))
    assert event.after == {"ended": 1}
    assert event.client_ip == TEST_CLIENT_IP
    await assert_no_secret_in_trail(services, tokens["refresh_token"], tokens["access_token"])


# --- refresh-token reuse ---------------------------------------------------------------------


async def _age_spent_tokens(services: AppServices, seconds: int) -> None:
    """Pretend the spent tokens were used ``seconds`` ago."""
    async with services.sessionmaker() as db:
        await db.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(used_at=utcnow() - timedelta(seconds=seconds))
        )
        await db.commit()


async def test_a_happy_refresh_records_nothing(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user("happy@example.com")
    tokens = await sign_in(client, "happy@example.com")
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200
    assert await events(services, audit.REFRESH_REUSED) == []


async def test_a_late_replay_is_an_alarm_that_commits_although_the_grant_fails(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    user = await make_user("stolen@example.com")
    first = await sign_in(client, "stolen@example.com")
    second = (await refresh(client, first["refresh_token"])).json()
    await _age_spent_tokens(services, 60)  # beyond the 10 s grace window

    replay = await refresh(client, first["refresh_token"])
    assert (replay.status_code, code(replay)) == (400, "REFRESH_TOKEN_REUSED")

    event = await the_event(services, audit.REFRESH_REUSED)
    # Whoever presents a spent token is not known to be the user: no actor.
    assert (event.actor_id, event.actor_email) == (None, None)
    assert (event.target_type, event.target_id) == ("user", str(user.id))
    assert event.after == {"session_id": sid(first), "reason": "reused"}
    assert event.client_ip == TEST_CLIENT_IP
    # The family is revoked: the newest token now answers SESSION_ENDED, with no new alarm.
    assert code(await refresh(client, second["refresh_token"])) == "SESSION_ENDED"
    assert len(await events(services, audit.REFRESH_REUSED)) == 1
    await assert_no_secret_in_trail(
        services, first["refresh_token"], second["refresh_token"], second["access_token"]
    )


class TestReplaysInTheWindow:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"refresh_reuse_grace_seconds": 300, "refresh_reuse_grace_max": 2}

    async def test_honoured_replays_are_quiet_and_one_over_the_bound_is_recorded(
        self, client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
    ) -> None:
        user = await make_user("tabs@example.com")
        first = await sign_in(client, "tabs@example.com")
        answers = [await refresh(client, first["refresh_token"]) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]  # a use and two replays
        assert await events(services, audit.REFRESH_REUSED) == []

        over = await refresh(client, first["refresh_token"])
        assert (over.status_code, code(over)) == (400, "REFRESH_TOKEN_REUSE_LIMIT")

        event = await the_event(services, audit.REFRESH_REUSED)
        assert (event.actor_id, event.target_type, event.target_id) == (
            None, "user", str(user.id)
        )  # fmt: skip
        assert event.after == {"session_id": sid(first), "reason": "reuse_limit"}
        assert event.client_ip == TEST_CLIENT_IP
        # Refused, not revoked: every tab's chain goes on.
        for answer in answers:
            assert (await refresh(client, answer.json()["refresh_token"])).status_code == 200
        await assert_no_secret_in_trail(
            services, first["refresh_token"], *(a.json()["refresh_token"] for a in answers)
        )


# --- RFC 7009 revocation ---------------------------------------------------------------------


async def test_revoking_a_users_refresh_token_is_recorded_once(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    user = await make_user("rev@example.com")
    tokens = await sign_in(client, "rev@example.com")
    for _ in range(2):  # the second one revokes nothing: no second event
        form = {"token": tokens["refresh_token"]}
        assert (await client.post("/auth/revoke", data=form)).status_code == 200
    assert (await client.post("/auth/revoke", data={"token": "no-such-token"})).status_code == 200

    event = await the_event(services, audit.TOKEN_REVOKED)
    assert (event.actor_id, event.actor_email) == (None, None)
    assert (event.target_type, event.target_id) == ("session", sid(tokens))
    assert event.after == {
        "client_id": None, "user_id": str(user.id), "token_type": "refresh_token"
    }  # fmt: skip
    assert event.client_ip == TEST_CLIENT_IP
    await assert_no_secret_in_trail(services, tokens["refresh_token"], tokens["access_token"])


async def test_revoking_a_users_access_token_names_the_authenticated_client(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices, admin_headers: Headers
) -> None:
    app = await register_client(client, admin_headers)
    user = await make_user("acc@example.com")
    tokens = await sign_in(client, "acc@example.com")
    auth = basic(app["id"], app["client_secret"])
    response = await client.post(
        "/auth/revoke", data={"token": tokens["access_token"]}, headers=auth
    )
    assert response.status_code == 200

    event = await the_event(services, audit.TOKEN_REVOKED)
    assert (event.target_type, event.target_id) == ("session", sid(tokens))
    assert event.after == {
        "client_id": app["id"], "user_id": str(user.id), "token_type": "access_token"
    }  # fmt: skip
    await assert_no_secret_in_trail(
        services, tokens["access_token"], tokens["refresh_token"], app["client_secret"]
    )


async def test_revoking_a_service_token_is_recorded_only_for_its_own_client(
    client: httpx.AsyncClient, services: AppServices, admin_headers: Headers
) -> None:
    orders = await register_client(client, admin_headers, ["authz:check"])
    other = await register_client(client, admin_headers)
    grant = {"grant_type": "client_credentials"}
    issued = await client.post(
        "/auth/token", data=grant, headers=basic(orders["id"], orders["client_secret"])
    )
    token = issued.json()["access_token"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    for creds in (other, orders, orders):  # another client's: left alone; twice: once
        auth = basic(creds["id"], creds["client_secret"])
        assert (
            await client.post("/auth/revoke", data={"token": token}, headers=auth)
        ).status_code == 200

    event = await the_event(services, audit.TOKEN_REVOKED)
    assert (event.actor_id, event.actor_email) == (None, None)
    assert (event.target_type, event.target_id) == ("service_token", jti)
    assert event.after == {"client_id": orders["id"], "token_type": "access_token"}
    assert event.client_ip == TEST_CLIENT_IP
    await assert_no_secret_in_trail(
        services, token, orders["client_secret"], other["client_secret"]
    )


async def test_concurrent_revocations_of_one_token_record_one_event(
    client: httpx.AsyncClient, services: AppServices, admin_headers: Headers
) -> None:
    orders = await register_client(client, admin_headers)
    auth = basic(orders["id"], orders["client_secret"])
    grant = {"grant_type": "client_credentials"}
    token = (await client.post("/auth/token", data=grant, headers=auth)).json()["access_token"]
    answers = await asyncio.gather(
        *(client.post("/auth/revoke", data={"token": token}, headers=auth) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {200}
    assert len(await events(services, audit.TOKEN_REVOKED)) == 1


# --- policy reloads --------------------------------------------------------------------------

EXTRA_POLICY = '@id("trail.extra")\npermit (principal, action == Action::"users:read", resource);\n'


class TestPolicyReloads:
    @pytest.fixture
    def settings_overrides(self, policy_dir: Path) -> dict[str, Any]:
        return {"policies_dir": policy_dir}

    async def test_a_reload_and_a_refused_reload_are_recorded(
        self,
        client: httpx.AsyncClient,
        services: AppServices,
        admin_headers: Headers,
        policy_dir: Path,
    ) -> None:
        admin = await user_id(services, ADMIN)
        old = (await client.get("/authz/policies", headers=admin_headers)).json()
        (policy_dir / "trail.cedar").write_text(EXTRA_POLICY)
        reloaded = await client.post("/authz/policies/reload", headers=admin_headers)
        assert reloaded.status_code == 200, reloaded.text
        new = reloaded.json()

        event = await the_event(services, audit.POLICY_RELOADED)
        assert (event.actor_id, event.actor_email) == (admin, ADMIN)
        assert (event.target_type, event.target_id) == ("policy_set", "policies")
        assert event.after == {
            "digest": new["digest"], "previous": old["digest"], "policies": len(new["policies"])
        }  # fmt: skip
        assert event.client_ip == TEST_CLIENT_IP

        (policy_dir / "trail.cedar").write_text('@id("trail.bad")\npermit (principal')
        broken = await client.post("/authz/policies/reload", headers=admin_headers)
        assert (broken.status_code, code(broken)) == (422, "POLICY_INVALID")

        both = await events(services, audit.POLICY_RELOADED)
        assert len(both) == 2
        refused = next(e for e in both if e.id != event.id)
        assert refused.actor_id == admin and refused.client_ip == TEST_CLIENT_IP
        assert refused.after == {
            "error": "POLICY_INVALID", "in_force": new["digest"], "problems": 1
        }  # fmt: skip
        await assert_no_secret_in_trail(
            services, admin_headers["Authorization"].removeprefix("Bearer ")
        )

    async def test_a_sighup_reload_is_recorded_without_an_actor(
        self, services: AppServices, settings: Settings, policy_dir: Path
    ) -> None:
        # An app of its own: its lifespan installs the SIGHUP handler (and disposes its engine
        # at the end, which the shared app must not suffer).
        own = create_app(settings)
        old = own.state.services.policies.bundle.digest
        (policy_dir / "trail.cedar").write_text(EXTRA_POLICY)
        async with own.router.lifespan_context(own):
            if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, signal.SIG_IGN, None):
                pytest.skip("no SIGHUP handler here (not the main thread): the signal would kill")
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = asyncio.get_running_loop().time() + 20
            while not await events(services, audit.POLICY_RELOADED):
                assert asyncio.get_running_loop().time() < deadline, "no event after SIGHUP"
                await asyncio.sleep(0.02)
            new = own.state.services.policies.bundle

        event = await the_event(services, audit.POLICY_RELOADED)
        assert (event.actor_id, event.actor_email, event.client_ip) == (None, None, None)
        assert event.after == {"digest": new.digest, "previous": old, "policies": len(new.ids)}
        assert new.digest != old
