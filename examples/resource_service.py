"""A service that accepts authsvc access tokens, in a few lines (see README, "Other services").

AUTHSVC_ISSUER=http://127.0.0.1:8000 uvicorn examples.resource_service:app --port 9000
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import FastAPI

from authsvc.client import TokenVerifier
from authsvc.client.fastapi import Principal, bearer_principal, require_permissions

ISSUER = os.environ.get("AUTHSVC_ISSUER", "http://127.0.0.1:8000")
AUDIENCE = os.environ.get("AUTHSVC_AUDIENCE", "authsvc")
REFETCH = float(os.environ.get("AUTHSVC_JWKS_MIN_REFETCH_SECONDS", "30"))

verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, min_refetch_seconds=REFETCH)
SignedIn = Annotated[Principal, bearer_principal(verifier)]
CanRefund = Annotated[Principal, require_permissions(verifier, "orders:refund")]

app = FastAPI(title="orders (example)")


@app.get("/public")
async def public() -> dict[str, str]:
    return {"hello": "anyone"}


@app.get("/me")
async def me(principal: SignedIn) -> dict[str, object]:
    return {"subject": principal.subject, "roles": sorted(principal.roles)}


# With service-client credentials, a second verifier also asks authsvc (RFC 7662) whether
# the token is still active: a logout is seen at once, at one request per call.
if os.environ.get("AUTHSVC_CLIENT_ID"):
    strict = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        introspect_as=(os.environ["AUTHSVC_CLIENT_ID"], os.environ["AUTHSVC_CLIENT_SECRET"]),
    )
    Strict = Annotated[Principal, bearer_principal(strict)]

    @app.get("/strict")
    async def strict_route(principal: Strict) -> dict[str, str]:
        return {"subject": principal.subject}


@app.post("/refunds")
async def refund(principal: CanRefund) -> dict[str, str]:
    return {"refunded_by": principal.subject}
