"""A NUL (U+0000) anywhere in a request is refused at the edge: 422 ``VALIDATION_ERROR``, error
type ``nul_byte``.

PostgreSQL's text type cannot hold U+0000: before the guard, such a string reaching the
database was a 500 (on eight routes, four of them open to anyone). Every route that takes a
string is tried here, through each way a string arrives: path, query, form, JSON, header.
(A path carries the NUL percent-encoded, as a client must send it.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from authsvc.db.models import Base
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, MakeUser

NUL = "\x00"


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    signed_in: bool = False
    form: dict[str, str] | None = None
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


ANONYMOUS = {
    "token-password-username": Case(
        "POST", "/auth/token",
        form={"grant_type": "password", "username": f"a{NUL}@example.com", "password": PASSWORD},
    ),
    "token-password-password": Case(
        "POST", "/auth/token",
        form={"grant_type": "password", "username": "a@example.com", "password": f"x{NUL}y"},
    ),
    "token-refresh": Case(
        "POST", "/auth/token", form={"grant_type": "refresh_token", "refresh_token": f"r{NUL}"}
    ),
    "token-client-credentials": Case(
        "POST", "/auth/token",
        form={"grant_type": "client_credentials", "client_id": f"c{NUL}", "client_secret": "s"},
    ),
    "token-grant-type": Case("POST", "/auth/token", form={"grant_type": f"password{NUL}"}),
    "register-email": Case(
        "POST", "/auth/register", json={"email": f"new{NUL}@example.com", "password": PASSWORD}
    ),
    "register-password": Case(
        "POST", "/auth/register", json={"email": "new@example.com", "password": f"{PASSWORD}{NUL}"}
    ),
    "register-key": Case(
        "POST", "/auth/register",
        json={"email": "new@example.com", "password": PASSWORD, f"x{NUL}": 1},
    ),
    "forgot-password": Case("POST", "/auth/forgot-password", json={"email": f"a{NUL}@example.com"}),
    "request-verify": Case(
        "POST", "/auth/request-verify-token", json={"email": f"a{NUL}@example.com"}
    ),
    "verify": Case("POST", "/auth/verify", json={"token": f"t{NUL}"}),
    "reset-password": Case(
        "POST", "/auth/reset-password", json={"token": f"t{NUL}", "password": PASSWORD}
    ),
    "revoke": Case("POST", "/auth/revoke", form={"token": f"t{NUL}"}),
    "introspect": Case("POST", "/auth/introspect", form={"token": f"t{NUL}"}),
    "query-on-a-public-route": Case("GET", "/.well-known/jwks.json", params={"x": NUL}),
    "path-on-a-public-route": Case("GET", "/auth/x%00y"),
    "user-agent-header": Case(
        "POST", "/auth/token",
        form={"grant_type": "password", "username": "owner@example.com", "password": PASSWORD},
        headers={"User-Agent": f"browser{NUL}"},
    ),
}  # fmt: skip

SIGNED_IN = {
    "me-email": Case("PATCH", "/users/me", json={"email": f"me{NUL}@example.com"}),
    "me-password": Case(
        "PATCH", "/users/me",
        json={"password": f"new {NUL} passphrase", "current_password": PASSWORD},
    ),
    "users-email-prefix": Case("GET", "/users", params={"email_prefix": f"a{NUL}"}),
    "users-cursor": Case("GET", "/users", params={"cursor": f"c{NUL}"}),
    "user-attributes": Case(
        "PATCH", "/users/{owner}", json={"attributes": {"department": f"sales{NUL}"}}
    ),
    "user-email": Case("PATCH", "/users/{owner}", json={"email": f"o{NUL}@example.com"}),
    "user-path": Case("GET", "/users/%00"),
    "role-create-name": Case("POST", "/roles", json={"name": f"r{NUL}", "description": "d"}),
    "role-create-description": Case(
        "POST", "/roles", json={"name": "fine", "description": f"d{NUL}"}
    ),
    "role-read-path": Case("GET", "/roles/us%00er"),
    "role-update": Case("PATCH", "/roles/user", json={"description": f"d{NUL}"}),
    "role-delete-path": Case("DELETE", "/roles/r%00"),
    "role-grant-path": Case("PUT", "/roles/user/permissions/users%00:read"),
    "permission-create": Case("POST", "/permissions", json={"name": f"orders:re{NUL}fund"}),
    "permissions-query": Case("GET", "/permissions", params={"resource": f"users{NUL}"}),
    "user-role-path": Case("PUT", "/users/{owner}/roles/ro%00le"),
    "audit-query": Case("GET", "/audit", params={"action": f"user.{NUL}"}),
    "client-create": Case("POST", "/clients", json={"name": f"svc{NUL}", "permissions": []}),
    "client-delete-path": Case("DELETE", "/clients/c%00"),
    "authz-check": Case(
        "POST", "/authz/check",
        json={"action": "users:read", "resource": {"type": "user", "id": f"x{NUL}"}},
    ),
    "json-escape-in-a-key": Case(
        "POST", "/roles", json={"name": "fine", "description": "d", f"k{NUL}": "v"}
    ),
}  # fmt: skip


async def table_counts(services: AppServices) -> dict[str, int]:
    async with services.sessionmaker() as db:
        return {
            name: int((await db.scalar(select(func.count()).select_from(table))) or 0)
            for name, table in Base.metadata.tables.items()
        }


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert detail["code"] == "VALIDATION_ERROR", detail
    assert detail["errors"] and detail["errors"][0]["type"] == "nul_byte", detail
    assert NUL not in response.text


async def send(
    client: httpx.AsyncClient, case: Case, headers: dict[str, str], owner: str
) -> httpx.Response:
    return await client.request(
        case.method,
        case.path.replace("{owner}", owner),
        data=case.form,
        json=case.json,
        params=case.params,
        headers={**headers, **case.headers},
    )


@pytest.fixture
async def owner(make_user: MakeUser) -> str:
    return str((await make_user("owner@example.com")).id)


@pytest.mark.parametrize("case", ANONYMOUS.values(), ids=ANONYMOUS.keys())
async def test_anonymous_requests_with_a_nul_are_refused(
    client: httpx.AsyncClient, services: AppServices, owner: str, case: Case
) -> None:
    before = await table_counts(services)
    assert_refused(await send(client, case, {}, owner))
    assert await table_counts(services) == before


@pytest.mark.parametrize("case", SIGNED_IN.values(), ids=SIGNED_IN.keys())
async def test_signed_in_requests_with_a_nul_are_refused(
    client: httpx.AsyncClient,
    services: AppServices,
    owner: str,
    admin_headers: dict[str, str],
    case: Case,
) -> None:
    before = await table_counts(services)
    assert_refused(await send(client, case, admin_headers, owner))
    assert await table_counts(services) == before


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"grant_type=password&username=a%00%40example.com&password=x", "form"),
        (b"grant_type=password&username=a\x00b&password=x", "form"),
        (b'{"email": "a\\u0000@example.com"}', "json"),
        (b'{"email": "a\\\\\\u0000@example.com"}', "json"),  # an escaped \ then \u0000
    ],
)
async def test_raw_bodies_with_a_nul_are_refused(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    path = "/auth/token" if content_type == "form" else "/auth/forgot-password"
    mime = "application/x-www-form-urlencoded" if content_type == "form" else "application/json"
    response = await client.post(path, content=content, headers={"content-type": mime})
    assert_refused(response)


@pytest.mark.parametrize(
    ("path", "content", "content_type"),
    [
        # A literal backslash followed by "u0000" is text, not a NUL.
        ("/auth/forgot-password", b'{"email": "a\\\\u0000@example.com"}', "application/json"),
        # "%2500" decodes to the three characters "%00".
        ("/auth/token", b"grant_type=password&username=a%2500&password=x", None),
    ],
)
async def test_lookalikes_of_a_nul_pass_the_guard(
    client: httpx.AsyncClient, path: str, content: bytes, content_type: str | None
) -> None:
    mime = content_type or "application/x-www-form-urlencoded"
    response = await client.post(path, content=content, headers={"content-type": mime})
    if response.status_code == 422:
        assert response.json()["detail"]["errors"][0]["type"] != "nul_byte"
    assert response.status_code < 500


async def test_multipart_form_fields_with_a_nul_are_refused(
    client: httpx.AsyncClient, services: AppServices
) -> None:
    """The token endpoint takes multipart forms too, where a NUL travels raw."""
    before = await table_counts(services)
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "a\x00@example.com", "password": "x"},
        files={"unused": ("unused.txt", b"")},  # forces multipart/form-data
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert_refused(response)
    assert await table_counts(services) == before
