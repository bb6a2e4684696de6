"""What one request costs: signature verifications and SQL statements.

One way in means the caller is resolved once per request: one signature verification (python-jose's
``jwt.decode`` as ``authsvc.security.tokens`` calls it) on every guarded route, at most one on a
public one. The SQL statements of the busiest requests are held under the budgets below.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy import event

from authsvc.services.container import AppServices
from tests.conftest import PASSWORD
from tests.openapi_helpers import document_only, fill, operations
from tests.unit.test_totp import reference_totp

MFA_GRANT = "urn:authsvc:params:oauth:grant-type:mfa"

ROOMY = "1000000/minute"
ADMIN = "admin@example.com"  # conftest's admin_headers signs this superuser in

# SQL statements per request (``before_cursor_execute``), at most, per engine, with the two
# seeded roles. Before "one way in" (37915b1) they were 1, 6, 7, 7 and 11: the role graph was
# read whole for one user's claims and per listed role. (pool_pre_ping's ping per checkout does
# not pass through this event.)
SQL_BUDGET: dict[str, dict[str, int]] = {
    "GET /users/me": {"sqlite": 1, "postgresql": 1},
    "GET /users/{user_id}": {"sqlite": 2, "postgresql": 2},
    "GET /roles": {"sqlite": 5, "postgresql": 5},
    # +4 with issue 13's sign-in throttle: the account's throttle row is read, the new trusted
    # device is inserted (its device token) after the account's oldest beyond 20 are let go
    # (one DELETE), and the sign-in is audited; +2 for the audit hash chain (the head's seq
    # reserved with its lock, then its new digest stored; services/audit_chain.py); +1 for
    # whether the account has a confirmed second factor (issue 14: then mfa_required instead).
    "password grant": {"sqlite": 11, "postgresql": 11},
    "refresh grant": {"sqlite": 8, "postgresql": 8},
    # Issue 14's second step: the challenge counted (UPDATE .. RETURNING), the user, the
    # factor read and its step spent, the challenge spent (5), then the throttle episode
    # ended, the device trusted (2), session, refresh token, claims and audit as in a
    # password sign-in.
    "mfa grant": {"sqlite": 14, "postgresql": 14},
}

_OPERATIONS = operations(document_only())
GUARDED_GETS = [str(op) for op in _OPERATIONS if op.guarded and op.method == "GET"]
PUBLIC = [str(op) for op in _OPERATIONS if not op.guarded]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    rules = ("login_ip", "login_username", "register_ip", "password_reset_ip")
    return {f"ratelimit_{rule}": ROOMY for rule in (*rules, "authenticated", "anonymous")}


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.seen: list[str] = []  # the statements, to show what a budget overrun spent

    def reset(self) -> None:
        self.count = 0
        self.seen.clear()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts the signature verifications: python-jose's ``jwt.decode`` as our codec calls it."""
    counter = Counter()
    decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter.count += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr("authsvc.security.tokens.jwt.decode", counting)
    return counter


@pytest.fixture
def statements(services: AppServices) -> Iterator[Counter]:
    """Counts the SQL statements sent on the app's engine."""
    counter = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counter.count += 1
        counter.seen.append(" ".join(statement.split())[:160])

    event.listen(services.engine.sync_engine, "before_cursor_execute", count)
    yield counter
    event.remove(services.engine.sync_engine, "before_cursor_execute", count)


async def _me(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/users/me", headers=headers)
    assert response.status_code == 200, response.text
    me: dict[str, Any] = response.json()
    return me


async def _client_token(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """A service client allowed to ask authorization questions, and its access token."""
    created = await client.post(
        "/clients", headers=admin, json={"name": "counter", "permissions": ["authz:check"]}
    )
    assert created.status_code == 201, created.text
    raw = f"{created.json()['id']}:{created.json()['client_secret']}"
    basic = {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}
    token = await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=basic
    )
    assert token.status_code == 200, token.text
    return {"basic": basic, "bearer": {"Authorization": f"Bearer {token.json()['access_token']}"}}


# --- signature verifications ------------------------------------------------------------------


@pytest.mark.parametrize("operation", GUARDED_GETS)
async def test_a_guarded_get_verifies_the_token_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], decodes: Counter, operation: str
) -> None:
    me = await _me(client, admin_headers)
    method, path = operation.split(" ")
    url = fill(path, {"user_id": me["id"], "role": "admin"})
    decodes.count = 0
    response = await client.request(method, url, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert decodes.count == 1, f"{operation}: {decodes.count} signature verifications"


@pytest.mark.parametrize("caller", ["user", "service client"])
async def test_an_authorization_check_verifies_the_token_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], decodes: Counter, caller: str
) -> None:
    me = await _me(client, admin_headers)
    resource = {"type": "User", "id": me["id"]}
    body: dict[str, Any] = {"action": "users:read", "resource": resource}
    headers = admin_headers
    if caller == "service client":
        headers = (await _client_token(client, admin_headers))["bearer"]
        body["principal"] = resource
    decodes.count = 0
    response = await client.post("/authz/check", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert decodes.count == 1, f"{caller}: {decodes.count} signature verifications"


async def test_introspection_verifies_the_token_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], decodes: Counter
) -> None:
    basic = (await _client_token(client, admin_headers))["basic"]
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    decodes.count = 0
    response = await client.post("/auth/introspect", data={"token": token}, headers=basic)
    assert response.status_code == 200 and response.json()["active"], response.text
    assert decodes.count == 1, f"{decodes.count} signature verifications"


@pytest.mark.parametrize("operation", PUBLIC)
async def test_a_public_route_verifies_a_token_at_most_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], decodes: Counter, operation: str
) -> None:
    method, path = operation.split(" ")
    decodes.count = 0
    response = await client.request(method, path, headers=admin_headers)
    assert response.status_code < 500, response.text
    assert decodes.count <= 1, f"{operation}: {decodes.count} signature verifications"


# --- SQL statements ---------------------------------------------------------------------------


async def _measured(
    client: httpx.AsyncClient, admin: dict[str, str], statements: Counter, name: str
) -> httpx.Response:
    me = await _me(client, admin)
    if name == "refresh grant":
        signed_in = await _password_grant(client)
        refresh = signed_in.json()["refresh_token"]
        statements.reset()
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        return await client.post("/auth/token", data=form)
    if name == "mfa grant":
        mfa_token = await _mfa_token(client, admin)
        statements.reset()
        # The next step's code (within the drift): never the step the confirmation spent.
        code = reference_totp(mfa_token[1], int(time.time()) + 30)
        form = {"grant_type": MFA_GRANT, "mfa_token": mfa_token[0], "code": code}
        return await client.post("/auth/token", data=form)
    statements.reset()
    if name == "password grant":
        return await _password_grant(client)
    method, path = name.split(" ")
    return await client.request(method, fill(path, {"user_id": me["id"]}), headers=admin)


async def _mfa_token(client: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, str]:
    """The admin enables a TOTP factor; a password sign-in then answers an mfa_token."""
    secret = (await client.post("/users/me/mfa/totp", headers=admin)).json()["secret"]
    code = reference_totp(secret, int(time.time()))
    confirmed = await client.post("/users/me/mfa/totp/confirm", json={"code": code}, headers=admin)
    assert confirmed.status_code == 200, confirmed.text
    answer = await _password_grant(client)
    assert answer.status_code == 400, answer.text
    return answer.json()["mfa_token"], secret


async def _password_grant(client: httpx.AsyncClient) -> httpx.Response:
    form = {"grant_type": "password", "username": ADMIN, "password": PASSWORD}
    return await client.post("/auth/token", data=form)


@pytest.mark.parametrize("name", list(SQL_BUDGET))
async def test_sql_statements_per_request_stay_within_budget(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    statements: Counter,
    name: str,
    record_property: Any,
) -> None:
    response = await _measured(client, admin_headers, statements, name)
    assert response.status_code == 200, response.text
    engine = services.engine.dialect.name
    record_property("sql_statements", statements.count)
    budget = SQL_BUDGET[name][engine]
    assert statements.count <= budget, f"{name} on {engine}: {statements.count} > {budget}:\n" + (
        "\n".join(statements.seen)
    )


async def test_listing_roles_costs_the_same_however_many_roles(
    client: httpx.AsyncClient, admin_headers: dict[str, str], statements: Counter
) -> None:
    """No query per role listed (an N+1 grows with the roles table, not with the request)."""
    statements.reset()
    listed = await client.get("/roles", headers=admin_headers)
    assert listed.status_code == 200, listed.text
    few = statements.count
    for number in range(5):
        made = await client.post("/roles", json={"name": f"extra-{number}"}, headers=admin_headers)
        assert made.status_code == 201, made.text
    statements.reset()
    listed = await client.get("/roles", headers=admin_headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 7, listed.text
    assert statements.count == few, f"{few} statements for 2 roles, {statements.count} for 7"
