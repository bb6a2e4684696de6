"""One way in: every operation of the OpenAPI document, called with each kind of bad token.

Every guarded operation must refuse a kind of bad token exactly as every other one does: the
same status, code, body and RFC 6750 §3 challenge. The public operations are listed below,
each with the reason it needs no token; a bad bearer token changes nothing there. A route that
is neither guarded nor listed fails ``test_every_route_is_guarded_or_listed_public``.

Guards run before the body is read (FastAPI solves dependencies, then validates the body), so
operations are called without a body; a 422 instead of a 401 would show that assumption broke.

The walk also checks the error answers against the document: every 4xx it collects (and those of
a valid admin token with no, empty or unreadable bodies, and of undeclared methods) must be a
documented status whose body validates against the documented JSON schema.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Login, MakeUser
from tests.openapi_helpers import (
    METHODS,
    Operation,
    error_answer_problem,
    fetch_document,
    fill,
    operations,
    schema_problems,
    undocumented_routes,
)

ROOMY = "1000000/minute"  # the walk must meet the guards, not the rate limits

# Operations that need no bearer token, each for a reason.
PUBLIC = {
    ("GET", "/healthz"): "liveness probe: the orchestrator has no token",
    ("GET", "/readyz"): "readiness probe: the orchestrator has no token",
    ("GET", "/metrics"): "its own scrape token (AUTHSVC_METRICS_TOKEN), not a user's",
    ("GET", "/.well-known/jwks.json"): "the public keys tokens are verified with (RFC 7517)",
    ("GET", "/.well-known/openid-configuration"): "discovery metadata (OpenID Connect's URL)",
    ("GET", "/.well-known/oauth-authorization-server"): "discovery metadata (RFC 8414 §3)",
    ("POST", "/auth/token"): "the token endpoint: the grant carries the credentials",
    ("POST", "/auth/register"): "sign-up comes before any token",
    ("POST", "/auth/request-verify-token"): "asks for an emailed token; answers the same always",
    ("POST", "/auth/verify"): "the emailed verification token is the credential",
    ("POST", "/auth/forgot-password"): "the user cannot sign in; answers the same always",
    ("POST", "/auth/reset-password"): "the emailed reset token is the credential",
    ("POST", "/auth/revert-email"): "the emailed revert token is the credential",
    ("POST", "/auth/confirm-email"): "the token emailed to the new address is the credential",
    ("POST", "/auth/revoke"): "client authentication (RFC 7009 §2.1), not a bearer token",
    ("POST", "/auth/introspect"): "client authentication (RFC 7662 §2.1), not a bearer token",
}
# Routes left out of the OpenAPI document, all public: the document and its viewers.
UNDOCUMENTED_PUBLIC = {
    ("GET", "/openapi.json"): "the API description itself",
    ("GET", "/docs"): "Swagger UI page",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI's OAuth2 redirect page",
    ("GET", "/redoc"): "ReDoc page",
    ("GET", "/docs/assets/redoc.standalone.js"): "ReDoc's script",
    ("*", "/docs/assets"): "static assets of the viewers",
}
# What every guarded operation answers to each kind of bad token: (status, detail.code).
EXPECTED = {
    "none": (401, "NOT_AUTHENTICATED"),
    "garbage": (401, "TOKEN_INVALID"),
    "revoked": (401, "TOKEN_REVOKED"),
    "stale": (401, "TOKEN_STALE"),
    "deactivated": (401, "TOKEN_INVALID"),
}
# Path values: nothing by these names exists, so nothing real is changed, and a route that
# looked its target up before checking the token would answer 404, not 401.
MISSING = {
    "user_id": str(uuid.UUID(int=7)),
    "session_id": str(uuid.UUID(int=8)),
    "client_id": str(uuid.UUID(int=9)),
    "role": "no-such-role",
    "permission": "nosuch:thing",
}
# Path values no route accepts: not a UUID, not a name.
MALFORMED = {name: "Not Valid" for name in MISSING}
# Bodies the admin walk sends to an operation that takes one.
NO_BODY: dict[str, Any] = {}
BODIES: dict[str, dict[str, Any]] = {
    "no body": NO_BODY,
    "empty object": {"json": {}},
    "unreadable": {"content": b"{", "headers": {"Content-Type": "application/json"}},
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    rules = ("login_ip", "login_username", "register_ip", "password_reset_ip")
    return {f"ratelimit_{rule}": ROOMY for rule in (*rules, "authenticated", "anonymous")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def bad_tokens(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, admin_headers: dict[str, str]
) -> dict[str, dict[str, str]]:
    """The Authorization headers of each kind of bad token (none for "none")."""
    revoked = await make_user("revoked@example.com")
    stale = await make_user("stale@example.com")
    inactive = await make_user("inactive@example.com")
    revoked_headers = await login(revoked.email)
    stale_headers = await login(stale.email)
    inactive_headers = await login(inactive.email)
    ended = await client.post("/auth/logout", headers=revoked_headers)
    assert ended.status_code == 204, ended.text
    # A role given after the token was issued: its roles and permissions claims are stale.
    given = await client.put(f"/users/{stale.id}/roles/admin", headers=admin_headers)
    assert given.status_code == 204, given.text
    deactivated = await client.patch(
        f"/users/{inactive.id}", json={"is_active": False}, headers=admin_headers
    )
    assert deactivated.status_code == 200, deactivated.text
    return {
        "none": {},
        "garbage": bearer("not-a-token"),
        "revoked": revoked_headers,
        "stale": stale_headers,
        "deactivated": inactive_headers,
    }


async def call(
    client: httpx.AsyncClient,
    operation: Operation,
    headers: dict[str, str],
    values: dict[str, str] = MISSING,
    body: dict[str, Any] = NO_BODY,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    extra = dict(body)
    merged = {**headers, **extra.pop("headers", {})}
    url = fill(operation.path, values)
    return await client.request(operation.method, url, headers=merged, params=params, **extra)


def admin_variants(operation: Operation) -> dict[str, dict[str, Any]]:
    """The calls of the admin walk: missing targets with each kind of body, malformed path
    values, and every query parameter given a value of the wrong kind."""
    bodies = BODIES if operation.has_body else {"no body": NO_BODY}
    variants: dict[str, dict[str, Any]] = {name: {"body": body} for name, body in bodies.items()}
    if "{" in operation.path:
        variants["malformed path"] = {"values": MALFORMED}
    query = [p["name"] for p in operation.spec.get("parameters", []) if p["in"] == "query"]
    if query:
        variants["bad query"] = {"params": dict.fromkeys(query, "-1.5e99x")}
    return variants


def refusal_problems(response: httpx.Response, kind: str) -> list[str]:
    """How ``response`` differs from the refusal every guarded route gives to ``kind``."""
    status, code = EXPECTED[kind]
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = response.text
    if response.status_code != status:
        return [f"status {response.status_code} {body}"]
    problems = []
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, dict) or set(body) != {"detail"}:
        problems.append(f"body {body}")
    elif set(detail) != {"code", "message"}:
        problems.append(f"detail keys {sorted(detail)}")
    if isinstance(detail, dict) and detail.get("code") != code:
        problems.append(f"code {detail.get('code')}")
    challenge = response.headers.get("www-authenticate", "")
    # RFC 6750 §3.1: the Bearer scheme; an error code when a token came, none without one.
    token_sent = kind != "none"
    if not challenge.startswith("Bearer") or token_sent != ('error="invalid_token"' in challenge):
        problems.append(f"WWW-Authenticate {challenge!r}")
    return problems


def unlisted(app: FastAPI) -> list[str]:
    """Operations neither guarded nor listed in ``PUBLIC``."""
    found = operations(app.openapi())
    return [str(op) for op in found if not op.guarded and (op.method, op.path) not in PUBLIC]


def test_every_route_is_guarded_or_listed_public(app: FastAPI) -> None:
    found = operations(app.openapi())
    assert not unlisted(app), f"neither guarded nor listed in PUBLIC: {unlisted(app)}"
    guarded_public = [str(op) for op in found if op.guarded and (op.method, op.path) in PUBLIC]
    assert not guarded_public, f"listed in PUBLIC but documented as guarded: {guarded_public}"
    gone = set(PUBLIC) - {(op.method, op.path) for op in found}
    assert not gone, f"PUBLIC lists operations that no longer exist: {gone}"
    assert undocumented_routes(app) == set(UNDOCUMENTED_PUBLIC)


def test_a_route_added_without_a_guard_is_caught(app: FastAPI) -> None:
    @app.get("/added-later")
    async def added_later() -> str:
        return "open"

    @app.get("/added-later-hidden", include_in_schema=False)
    async def added_later_hidden() -> str:
        return "open"

    app.openapi_schema = None  # the document is cached: build it again with the new routes
    assert unlisted(app) == ["GET /added-later"]
    assert ("GET", "/added-later-hidden") in undocumented_routes(app) - set(UNDOCUMENTED_PUBLIC)


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_every_guarded_route_refuses_a_bad_token_the_same_way(
    client: httpx.AsyncClient, bad_tokens: dict[str, dict[str, str]], kind: str
) -> None:
    guarded = [op for op in operations(await fetch_document(client)) if op.guarded]
    wrong: list[str] = []
    answers: dict[tuple[int, str, str], list[str]] = {}
    for operation in guarded:
        response = await call(client, operation, bad_tokens[kind])
        problems = refusal_problems(response, kind)
        if problems:
            wrong.append(f"{operation}: {'; '.join(problems)}")
        challenge = response.headers.get("www-authenticate", "")
        answers.setdefault((response.status_code, response.text, challenge), []).append(
            str(operation)
        )
    report = [f"{len(wrong)} of {len(guarded)} guarded operations answer a {kind} token "]
    report.append(f"other than {EXPECTED[kind]}:\n" + "\n".join(wrong))
    if len(answers) > 1:
        report.append("\nand not all the same way:")
        report += [
            f"\n{answer}: {ops[:3]}{'...' if len(ops) > 3 else ''}"
            for answer, ops in answers.items()
        ]
    assert not wrong and len(answers) == 1, "".join(report)


@pytest.mark.parametrize("kind", [kind for kind in EXPECTED if kind != "none"])
async def test_public_routes_ignore_a_bad_bearer_token(
    client: httpx.AsyncClient, bad_tokens: dict[str, dict[str, str]], kind: str
) -> None:
    public = [op for op in operations(await fetch_document(client)) if not op.guarded]
    viewers = [
        Operation(method, path, {})
        for method, path in UNDOCUMENTED_PUBLIC
        if method != "*"  # the mount: one of its files below
    ] + [Operation("GET", "/docs/assets/swagger-ui.css", {})]
    wrong = []
    for operation in public + viewers:
        anonymous = await call(client, operation, {})
        with_token = await call(client, operation, bad_tokens[kind])
        statuses = {anonymous.status_code, with_token.status_code}
        if len(statuses) > 1 or max(statuses) >= 500:
            wrong.append(f"{operation}: {anonymous.status_code} -> {with_token.status_code}")
    assert not wrong, f"a {kind} bearer token changed the answer:\n" + "\n".join(wrong)


# --- every 4xx is documented, in its documented shape ----------------------------------------


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_bad_token_4xx_answers_are_documented(
    client: httpx.AsyncClient, bad_tokens: dict[str, dict[str, str]], kind: str
) -> None:
    document = await fetch_document(client)
    wrong = []
    for operation in operations(document):
        response = await call(client, operation, bad_tokens[kind])
        if 400 <= response.status_code < 500:
            problem = error_answer_problem(document, operation, response)
            if problem:
                wrong.append(f"{operation}: {problem}")
    assert not wrong, f"undocumented 4xx answers ({kind} token):\n" + "\n".join(wrong)


def _signing_out_last(operation: Operation) -> bool:
    # Signing out ends the walk's own session: every later call would be a 401.
    return operation.path in ("/auth/logout", "/auth/logout-all")


async def test_admin_4xx_answers_are_documented(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """A valid admin token, missing targets, and no, empty or unreadable bodies: the 404s,
    409s and 422s the routes give must be documented, in their documented shape."""
    document = await fetch_document(client)
    walk = sorted(operations(document), key=_signing_out_last)
    wrong, seen = [], set()
    for operation in walk:
        for name, variant in admin_variants(operation).items():
            response = await call(client, operation, admin_headers, **variant)
            assert response.status_code < 500, (str(operation), name, response.text)
            if 400 <= response.status_code < 500:
                seen.add(response.status_code)
                problem = error_answer_problem(document, operation, response)
                if problem:
                    wrong.append(f"{operation} ({name}): {problem}")
    assert {404, 422} <= seen  # the walk did reach the lookups and the validation
    assert not wrong, "undocumented 4xx answers (admin token):\n" + "\n".join(wrong)


async def test_undeclared_methods_are_405_in_the_documented_shape(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    document = await fetch_document(client)
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    wrong = []
    for path, item in document["paths"].items():
        declared = {method.upper() for method in item}
        for method in sorted(set(METHODS) - declared):
            response = await client.request(method, fill(path, MISSING), headers=admin_headers)
            allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
            if response.status_code != 405 or allowed - {"HEAD"} != declared:
                wrong.append(f"{method} {path}: {response.status_code} Allow {sorted(allowed)}")
            elif problems := schema_problems(document, error_body, response.json()):
                wrong.append(f"{method} {path}: {problems[0]}")
    assert not wrong, "\n".join(wrong)


# --- service (client_credentials) tokens -------------------------------------------------------

# The decision API is the one guarded place a service client may call (with its own token).
SERVICE_ROUTES = {("POST", "/authz/check"), ("POST", "/authz/check/batch")}


async def test_service_tokens_are_refused_the_same_way_on_user_routes(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """A valid service token: 403 ``USER_TOKEN_REQUIRED`` on every route for users (never a
    401: the token is good, the route is not for it). A revoked one: 401 ``TOKEN_REVOKED`` on
    every guarded route, the decision API included."""
    from tests.api.test_oauth import register_client
    from tests.api.test_revocation_cc import service_token

    created = await register_client(client, admin_headers, permissions=["authz:check"])
    valid = bearer(await service_token(client, created))
    revoked_token = await service_token(client, created)
    revoked = await client.post(
        "/auth/revoke",
        data={"token": revoked_token, "client_id": created["id"],
              "client_secret": created["client_secret"]},
    )  # fmt: skip
    assert revoked.status_code == 200, revoked.text
    guarded = [op for op in operations(await fetch_document(client)) if op.guarded]
    wrong: list[str] = []
    for operation in guarded:
        response = await call(client, operation, valid)
        code = response.json().get("detail", {}).get("code")
        if (operation.method, operation.path) in SERVICE_ROUTES:
            if response.status_code in (401, 403):  # no body: 422, never a refusal
                wrong.append(f"{operation} valid: {response.status_code} {code}")
        elif (response.status_code, code) != (403, "USER_TOKEN_REQUIRED"):
            wrong.append(f"{operation} valid: {response.status_code} {code}")
        response = await call(client, operation, bearer(revoked_token))
        problems = refusal_problems(response, "revoked")
        if problems:
            wrong.append(f"{operation} revoked: {'; '.join(problems)}")
    assert SERVICE_ROUTES <= {(op.method, op.path) for op in guarded}
    assert not wrong, "\n".join(wrong)
