"""Property-based API testing: schemathesis drives every documented operation of the app.

Each operation is called with generated input (valid and invalid) as a superuser, in-process
(schemathesis' ASGI transport), on both engines: no answer may be a 5xx. With
AUTHSVC_SCHEMATHESIS_ALL_CHECKS=1 every check runs (status codes, content types, headers and
bodies as the OpenAPI document declares them, invalid input refused, valid input accepted,
authentication not ignored). Deterministic (derandomized, no deadline, bounded examples),
so a failure here is a real one and reproduces.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from sqlalchemy import text

from authsvc.config import Settings
from authsvc.db.models import User
from authsvc.db.session import create_engine, create_sessionmaker
from authsvc.main import create_app
from authsvc.security.passwords import PasswordHasher
from tests.conftest import (
    PASSWORD,
    RESET_STATEMENTS,
    TEST_CLIENT_NETWORK,
    TOKEN_SECRET,
)

# Bounded so both engines together stay within a few minutes on two busy cores.
MAX_EXAMPLES = int(os.environ.get("AUTHSVC_SCHEMATHESIS_EXAMPLES", "25"))
ROOMY = "1000000/minute"  # the run must meet its input, not the rate limits
ADMIN = "fuzz-admin@example.com"

# Every check (`--checks all`) when AUTHSVC_SCHEMATHESIS_ALL_CHECKS=1. By default only "no
# 5xx": the full set still finds documentation mismatches in routes other work is changing
# (undocumented 401/403/404 answers, domain 422s without `errors`, Allow on 405, ...); the
# list is in issue 11's closing note. Turn it on for good once they are fixed.
CHECKS = None if os.environ.get("AUTHSVC_SCHEMATHESIS_ALL_CHECKS") == "1" else [not_a_server_error]

# Operations left out, each for a reason:
EXCLUDED = {
    # They end the run's own session: every later call would be a 401 and test nothing.
    ("POST", "/auth/logout"),
    ("POST", "/auth/logout-all"),
}


async def _reset(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in RESET_STATEMENTS:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _make_superuser(url: str) -> None:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            hashed = await PasswordHasher(rounds=4).hash(PASSWORD)
            session.add(
                User(email=ADMIN, hashed_password=hashed, is_superuser=True, is_verified=True)
            )
            await session.commit()
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def fuzzed_app(
    database_url: str, signing_key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    """One app per engine for the whole module. Schemathesis runs it on its own event-loop
    thread (lifespan included), so the database work here uses engines of its own."""
    asyncio.run(_reset(database_url))
    asyncio.run(_make_superuser(database_url))
    values: dict[str, Any] = {
        "data_dir": tmp_path_factory.mktemp("fuzz"),
        "database_url": database_url,
        "migrate_on_start": False,
        "signing_key_file": signing_key_file,
        "token_secret": SecretStr(TOKEN_SECRET),
        "bcrypt_rounds": 4,
        "trusted_networks": [TEST_CLIENT_NETWORK],
        **{
            f"ratelimit_{rule}": ROOMY
            for rule in (
                "login_ip",
                "login_username",
                "register_ip",
                "password_reset_ip",
                "authenticated",
                "anonymous",
            )
        },  # fmt: skip
    }
    app = create_app(Settings(_env_file=None, **values))
    with asgi.get_client(app) as client:
        response = client.post(
            "/auth/token", data={"grant_type": "password", "username": ADMIN, "password": PASSWORD}
        )
    assert response.status_code == 200, response.text
    yield app, {"Authorization": f"Bearer {response.json()['access_token']}"}
    asyncio.run(_reset(database_url))


def _document_app() -> FastAPI:
    """An app for the OpenAPI document only (it needs no database): the operations are
    collected at import time; the calls go to ``fuzzed_app``."""
    scratch = Path(tempfile.mkdtemp(prefix="authsvc-openapi-"))
    return create_app(
        Settings(
            _env_file=None,
            data_dir=scratch,
            database_url=f"sqlite+aiosqlite:///{scratch / 'unused.db'}",
            token_secret=SecretStr(TOKEN_SECRET),
        )
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", _document_app()).exclude(
    func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in EXCLUDED
)
schema.config.generation.update(max_examples=MAX_EXAMPLES)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case, fuzzed_app: tuple[FastAPI, dict[str, str]]
) -> None:
    app, auth = fuzzed_app
    case.call_and_validate(app=app, headers=auth, checks=CHECKS)
