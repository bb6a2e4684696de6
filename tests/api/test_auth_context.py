"""Every access token says how and when its user authenticated (RFC 8176 ``amr``, OpenID
Connect ``auth_time``), and a refresh keeps both: refreshing is not authenticating again."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import httpx
import jwt
from sqlalchemy import update

from authsvc.db.models import Session
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, MakeUser


def claims(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def test_a_password_sign_in_says_pwd_and_when_and_a_refresh_keeps_both(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user("amr@example.com")
    before = int(time.time())
    signed_in = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "amr@example.com", "password": PASSWORD},
    )
    assert signed_in.status_code == 200, signed_in.text
    first = claims(signed_in.json()["access_token"])
    assert first["amr"] == ["pwd"]
    auth_time = first["auth_time"]
    assert isinstance(auth_time, int) and before - 1 <= auth_time <= int(time.time()) + 1

    # The session began an hour ago: a refresh now still says so.
    async with services.sessionmaker() as db:
        sid = str(first["sid"])
        stored = await db.get(Session, uuid.UUID(sid))
        assert stored is not None
        earlier = stored.auth_time.replace(microsecond=0) - timedelta(hours=1)
        await db.execute(update(Session).where(Session.id == stored.id).values(auth_time=earlier))
        await db.commit()
    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": signed_in.json()["refresh_token"]},
    )
    assert refreshed.status_code == 200, refreshed.text
    second = claims(refreshed.json()["access_token"])
    assert second["amr"] == ["pwd"]
    assert second["auth_time"] == int(earlier.timestamp())
