"""Property-based API testing: schemathesis drives every documented operation of the app.

Each operation is called with generated input (valid and invalid) as a superuser, in-process
(schemathesis' ASGI transport), on both engines, and every check runs (`--checks all`): no
5xx; status codes, content types, headers and bodies as the OpenAPI document declares them;
invalid input refused, valid input accepted; undeclared methods answered 405 with a true
`Allow`; authentication not ignored. Deterministic (derandomized, no deadline, bounded
examples), so a failure here is a real one and reproduces.

AUTHSVC_SCHEMATHESIS_ALL_CHECKS=0 narrows a local run to "no 5xx" (for debugging only).
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
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.openapi.checks import RejectedPositiveData
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

# Every check by default (`--checks all`); "0" narrows a local debugging run to no-5xx.
CHECKS = [not_a_server_error] if os.environ.get("AUTHSVC_SCHEMATHESIS_ALL_CHECKS") == "0" else None

# "Schema-valid input is accepted" cannot hold for a value whose validity is not a matter of
# syntax. Only these codes, on these operations, are tolerated for schema-valid input:
OPAQUE_VALUE_REFUSED = {
    # A token only the server can mint: the generator cannot produce a live one.
    ("POST", "/auth/verify"): {"VERIFY_USER_BAD_TOKEN"},
    ("POST", "/auth/reset-password"): {"RESET_PASSWORD_BAD_TOKEN"},
    ("POST", "/auth/revert-email"): {"REVERT_EMAIL_BAD_TOKEN"},
    ("POST", "/auth/confirm-email"): {"CONFIRM_EMAIL_BAD_TOKEN"},
    # An opaque cursor (only a `next_cursor` the list handed out), and a rule across two query
    # parameters (`cursor` with a non-zero `offset`) that OpenAPI parameters cannot state.
    ("GET", "/users"): {"USER_CURSOR_INVALID", "USER_CURSOR_WITH_OFFSET"},
    # The entity types, attributes and actions come from the Cedar policy schema, which is
    # configuration (policies/, reloadable at run time), not part of the OpenAPI document.
    ("POST", "/authz/check"): {"AUTHZ_CHECK_INVALID"},
    ("POST", "/authz/check/batch"): {"AUTHZ_CHECK_INVALID"},
    # The password policy (length from settings, a list of common passwords) and a taken
    # email (state, like a 409; only with AUTHSVC_REQUIRE_VERIFIED_EMAIL off) are not syntax
    # either.
    ("POST", "/auth/register"): {"REGISTER_INVALID_PASSWORD", "REGISTER_USER_ALREADY_EXISTS"},
    # A second factor's code only the user's authenticator (or recovery sheet) holds; its
    # shape is refused with the route's own 400 MFA_CODE_INVALID (the issue asks for it),
    # not a schema 422.
    ("POST", "/users/me/mfa/totp/confirm"): {"MFA_CODE_INVALID", "MFA_CODE_REJECTED"},
    ("POST", "/users/me/mfa/recovery-codes"): {"MFA_CODE_INVALID", "MFA_CODE_REJECTED"},
    ("DELETE", "/users/me/mfa/totp"): {"MFA_CODE_INVALID", "MFA_CODE_REJECTED"},
}


def _code(response: Any) -> str | None:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    return detail.get("code") if isinstance(detail, dict) else None


def _special_use_email(response: Any) -> bool:
    """JSON Schema's ``email`` format admits any domain; addresses at RFC 6761 special-use
    domains (``.test``, ``.invalid``, ``.localhost``, ...) can never get mail and are refused."""
    try:
        errors = response.json()["detail"]["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(errors) and all(
        str(e.get("loc", [""])[-1]).endswith("email") and "special-use" in str(e.get("msg"))
        for e in errors
    )


def valid_input_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """``positive_data_acceptance``, except for the refusals ``OPAQUE_VALUE_REFUSED`` names."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        key = (case.operation.method.upper(), case.operation.path)
        if _code(response) in OPAQUE_VALUE_REFUSED.get(key, set()):
            return None
        if _special_use_email(response):
            return None
        raise


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
        "argon2_memory_kib": 1024,
        "argon2_time_cost": 1,
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
# No NUL in generated strings: every request carrying one is refused at the edge with a 422
# (NulByteGuard: PostgreSQL text cannot hold it), a rule of the whole API that the document
# does not repeat on each string; tests/api/test_nul_bytes.py covers it.
schema.config.generation.update(max_examples=MAX_EXAMPLES, allow_x00=False)
# A body over AUTHSVC_MAX_BODY_BYTES is refused with 413 PAYLOAD_TOO_LARGE before it is parsed
# (BodySizeLimit), another rule of the whole API that the document does not repeat: invalid
# data refused that way is refused, not accepted.
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


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
    if CHECKS is not None:
        case.call_and_validate(app=app, headers=auth, checks=CHECKS)
        return
    case.call_and_validate(
        app=app,
        headers=auth,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[valid_input_accepted],
    )
