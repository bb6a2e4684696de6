"""Fixtures: a migrated database per engine, apps shared by settings, a client, user factories.

Every test that touches the database runs twice, on SQLite (the embedded default) and on a real
PostgreSQL that ``tests/servers.py`` starts for the session. ``AUTHSVC_TEST_ENGINES=sqlite``
narrows a local run to one engine; CI runs both.

Building an app (key ring, engine, Cedar policy set, the common-password list) costs more than
most tests, so one app serves every test with the same settings (``tests/apps.py``). Each test
still starts from a clean state: rows, rate-limit counters and pending messages are reset
around it, and an app whose unresettable parts a test changed (policies reloaded, keys
rotated, a route added) is thrown away after that test. ``tests/test_isolation.py`` proves it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, text

from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.db.models import Base, User
from authsvc.security.keys import load_or_create_signing_key
from authsvc.services.container import AppServices
from authsvc.services.issuer import IssuedTokens, TokenIssuer
from authsvc.services.sessions import SessionService
from tests.apps import STATS, AppCache

ENGINES = [
    engine.strip()
    for engine in os.environ.get("AUTHSVC_TEST_ENGINES", "sqlite,postgresql").split(",")
    if engine.strip()
]
PASSWORD = "correct horse battery staple"
# Rows the migrations seed, which every test starts with: the roles admin and user, the
# built-in permissions and admin's grants of them. Everything else goes.
_SEEDED = {
    "role_permissions": "NOT (role_id IN (SELECT id FROM roles WHERE name = 'admin') AND "
    "permission_id IN (SELECT id FROM permissions WHERE builtin = true))",
    "roles": "name NOT IN ('admin', 'user')",
    "permissions": "builtin = false",
}


def _reset_statements() -> list[str]:
    """Back to the migrated state, derived from the models: a table added later is wiped
    without anyone listing it here (children before parents, so foreign keys hold)."""
    statements = []
    for table in reversed(Base.metadata.sorted_tables):
        where = _SEEDED.get(table.name)
        statements.append(f'DELETE FROM "{table.name}"' + (f" WHERE {where}" if where else ""))
    return statements


RESET_STATEMENTS = _reset_statements()
TOKEN_SECRET = "test-token-secret-" + "x" * 32


@pytest.fixture(scope="session")
def _servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session", params=ENGINES)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, _servers: ExitStack
) -> str:
    """A migrated, empty database for the whole session, one per engine."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'authsvc.db'}"
    elif request.param == "postgresql":
        from tests.servers import postgres_server

        url = _servers.enter_context(postgres_server())
    else:
        raise ValueError(f"unknown engine {request.param!r} in AUTHSVC_TEST_ENGINES")
    migrations.upgrade(url)
    return url


TEST_CLIENT_IP = "203.0.113.10"
TEST_CLIENT_NETWORK = "203.0.113.0/24"


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key for the session: generating one per test would dominate the run time."""
    path = tmp_path_factory.mktemp("keys") / "signing-key-RS256.pem"
    load_or_create_signing_key(path, "RS256")
    return path


SHIPPED_POLICIES = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the session, so that tests share settings (and apps). A test
    that writes there for good (a key store it rotates) overrides ``data_dir`` with its own
    ``tmp_path``."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def _policy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy-copy") / "policies"


@pytest.fixture
def policy_dir(_policy_copy: Path) -> Path:
    """A copy of the shipped policies that a test may change; a module that uses it points
    ``settings_overrides`` at it (``{"policies_dir": policy_dir}``). One folder for the
    session, put back to the shipped files before each test that asks for it: the app cache
    keys apps by the folder's content, so tests that leave it as shipped share an app."""
    if _policy_copy.exists():
        shutil.rmtree(_policy_copy)
    shutil.copytree(SHIPPED_POLICIES, _policy_copy)
    return _policy_copy


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Tests override settings by redefining or updating this fixture."""
    return {}


@pytest.fixture
def settings(
    database_url: str,
    signing_key_file: Path,
    data_dir: Path,
    settings_overrides: dict[str, Any],
) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "migrate_on_start": False,
        "signing_key_file": signing_key_file,
        "token_secret": SecretStr(TOKEN_SECRET),
        "bcrypt_rounds": 4,
        # Argon2id at a test-sized cost (the OWASP default is checked in test_passwords).
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
        # The in-process client's address (below) plays the office network; the guardrail
        # tests override this to see destructive actions refused from elsewhere.
        "trusted_networks": [TEST_CLIENT_NETWORK],
    }
    values.update(settings_overrides)
    return Settings(_env_file=None, **values)


async def reset_database(services: AppServices) -> None:
    async with services.engine.begin() as conn:
        for statement in RESET_STATEMENTS:
            await conn.execute(text(statement))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STATS.built:
        terminalreporter.write_line(
            f"apps: {STATS.built} built, {STATS.reused} reused, "
            f"{STATS.discarded} thrown away after a test changed them"
        )


@pytest.fixture(scope="session")
async def app_cache() -> AsyncIterator[AppCache]:
    cache = AppCache(reset_database)
    try:
        yield cache
    finally:
        await cache.close()  # every engine disposed at the end of the session


@pytest.fixture
async def app(settings: Settings, app_cache: AppCache) -> AsyncIterator[FastAPI]:
    """The app for these settings, shared with the other tests that have the same settings,
    in a clean state for this test."""
    async with app_cache.lease(settings) as application:
        yield application


@pytest.fixture
def services(app: FastAPI) -> AppServices:
    result: AppServices = app.state.services
    return result


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(TEST_CLIENT_IP, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


MakeUser = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(services: AppServices) -> MakeUser:
    """Insert a user directly (no HTTP, no rate limits): ``await make_user("a@example.com")``."""

    async def factory(
        email: str,
        password: str = PASSWORD,
        *,
        is_superuser: bool = False,
        is_verified: bool = True,
        is_active: bool = True,
    ) -> User:
        user = User(
            email=email,
            hashed_password=await services.hasher.hash(password),
            is_superuser=is_superuser,
            is_verified=is_verified,
            is_active=is_active,
        )
        async with services.sessionmaker() as session:
            session.add(user)
            await session.commit()
        return user

    return factory


Login = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def login(client: httpx.AsyncClient) -> Login:
    """``headers = await login(email)``: the Authorization header of a fresh access token."""

    async def do_login(email: str, password: str = PASSWORD) -> dict[str, str]:
        response = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": password},
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return do_login


@pytest.fixture
async def admin_headers(make_user: MakeUser, login: Login) -> dict[str, str]:
    await make_user("admin@example.com", is_superuser=True)
    return await login("admin@example.com")


async def issue_tokens(
    services: AppServices,
    email: str,
    *,
    amr: tuple[str, ...] = ("pwd", "otp", "mfa"),
    auth_time: datetime | None = None,
) -> IssuedTokens:
    """Tokens of a new session of ``email`` as if signed in by ``amr`` (default: password and
    a one-time code, RFC 8176), at ``auth_time`` (default: now). Built the way the password
    grant builds them (session, then the one issuer), without the second-factor exchange."""
    async with services.sessionmaker() as db:
        user = (await db.scalars(select(User).where(User.email == email))).one()
        sessions = SessionService(db, services.session_policy)
        session, refresh = await sessions.start(user, TEST_CLIENT_IP, "tests", amr=amr)
        if auth_time is not None:
            session.auth_time = auth_time
        issuer = TokenIssuer(db, services.codec, services.settings.mfa_required_roles)
        return await issuer.for_user(user, session, refresh)  # commits


MfaLogin = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def mfa_login(services: AppServices) -> MfaLogin:
    """``headers = await mfa_login(email)``: the Authorization header of a session signed in
    with a second factor (``amr``, ``auth_time`` as in :func:`issue_tokens`)."""

    async def do_login(email: str, **how: Any) -> dict[str, str]:
        issued = await issue_tokens(services, email, **how)
        return {"Authorization": f"Bearer {issued.access_token}"}

    return do_login


@pytest.fixture
async def mfa_admin_headers(admin_headers: dict[str, str], mfa_login: MfaLogin) -> dict[str, str]:
    """The superuser of ``admin_headers``, signed in with a second factor: what the shipped
    guardrail asks of users:delete and roles:delete."""
    return await mfa_login("admin@example.com")


def token_from_console(output: str, purpose: str) -> str:
    """The token the console notifier printed (the default notifier writes to stdout)."""
    subject = {
        "verify": "Verify your email address",
        "reset-password": "Reset your password",
        "email-changed": "Your email address was changed",
    }[purpose]
    match = re.search(re.escape(subject) + r" ---\n.*?:\n\n(\S+)\n", output, re.S)
    assert match, f"no {purpose} message in output: {output!r}"
    return match.group(1)


async def row_count(services: AppServices) -> int:
    async with services.engine.connect() as conn:
        return int((await conn.execute(text('SELECT count(*) FROM "user"'))).scalar_one())


async def delivered(services: AppServices, capsys: pytest.CaptureFixture[str]) -> str:
    """What the console notifier printed, once the outbox has delivered everything."""
    await services.notifier.drain()
    return capsys.readouterr().out
