"""Tests share apps (``tests/apps.py``), never state: each pair below runs in order, the first
test leaves something behind, the second (same settings) must not see it.

The pairs talk through ``LEFT`` (per engine). Run alone, a second half has nothing to compare
with and skips; the whole module (any engine selection) runs both halves in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from authsvc.db.models import Role
from authsvc.services.container import AppServices
from tests.conftest import MakeUser, row_count

LEFT: dict[tuple[str, str], Any] = {}


@pytest.fixture
def settings_overrides(policy_dir: Path) -> dict[str, Any]:
    return {"policies_dir": policy_dir, "ratelimit_login_username": "2/minute"}


def left_by(first: str, database_url: str) -> Any:
    if (first, database_url) not in LEFT:
        pytest.skip(f"runs after {first} (run the module)")
    return LEFT[first, database_url]


def wrong_login(email: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": "not the password"}


# --- rows, rate-limit counters, messages: reset on the same app -------------------------------


async def test_leaves_rows_counters_and_a_message(
    app: FastAPI,
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    database_url: str,
) -> None:
    await make_user("left@example.com")
    assert (await client.post("/roles", headers=admin_headers, json={"name": "left"})).is_success
    for _ in range(2):
        assert (
            await client.post("/auth/token", data=wrong_login("left@example.com"))
        ).status_code == 400
    assert (
        await client.post("/auth/token", data=wrong_login("left@example.com"))
    ).status_code == 429
    sent = await client.post("/auth/forgot-password", json={"email": "left@example.com"})
    assert sent.status_code == 202  # the message may still be on its way when the test ends
    LEFT["rows", database_url] = app


async def test_sees_no_rows_counters_or_message(
    app: FastAPI,
    client: httpx.AsyncClient,
    services: AppServices,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The same app: what follows is the reset's doing, not a new app's.
    assert left_by("rows", database_url) is app
    assert await row_count(services) == 0
    async with services.sessionmaker() as session:
        assert set(await session.scalars(select(Role.name))) == {"admin", "user"}
    # The account's login budget is whole again (and the account is gone: a plain 400).
    for _ in range(2):
        assert (
            await client.post("/auth/token", data=wrong_login("left@example.com"))
        ).status_code == 400
    await services.notifier.drain()
    assert "left@example.com" not in capsys.readouterr().out


# --- a reloaded policy set: that app is thrown away --------------------------------------------

EXTRA = '@id("left.extra")\npermit (principal, action, resource) when { false };\n'


async def test_reloads_changed_policies(
    client: httpx.AsyncClient, admin_headers: dict[str, str], policy_dir: Path, database_url: str
) -> None:
    (policy_dir / "left.cedar").write_text(EXTRA)
    reloaded = await client.post("/authz/policies/reload", headers=admin_headers)
    assert reloaded.status_code == 200, reloaded.text
    assert "left.extra" in {p["id"] for p in reloaded.json()["policies"]}
    LEFT["policies", database_url] = reloaded.json()["digest"]


async def test_sees_the_shipped_policies(
    client: httpx.AsyncClient, admin_headers: dict[str, str], policy_dir: Path, database_url: str
) -> None:
    reloaded_digest = left_by("policies", database_url)
    assert not (policy_dir / "left.cedar").exists()
    loaded = (await client.get("/authz/policies", headers=admin_headers)).json()
    assert loaded["digest"] != reloaded_digest
    assert "left.extra" not in {p["id"] for p in loaded["policies"]}


# --- a route added to the app: that app is thrown away -----------------------------------------


async def test_adds_a_route(app: FastAPI, client: httpx.AsyncClient, database_url: str) -> None:
    @app.get("/left-behind")
    async def left_behind() -> str:
        return "here"

    assert (await client.get("/left-behind")).status_code == 200
    LEFT["route", database_url] = app


async def test_sees_no_added_route(
    app: FastAPI, client: httpx.AsyncClient, database_url: str
) -> None:
    assert left_by("route", database_url) is not app
    assert (await client.get("/left-behind")).status_code == 404
