"""A service that accepts authsvc access tokens, in a few lines (see README, "Other services").

AUTHSVC_ISSUER=http://127.0.0.1:8000 uvicorn examples.resource_service:app --port 9000
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import FastAPI

from authsvc.client import TokenVerifier
from authsvc.client.fastapi import Principal, bearer_principal, require_permissions

verifier = TokenVerifier(
    issuer=os.environ.get("AUTHSVC_ISSUER", "http://127.0.0.1:8000"),
    audience=os.environ.get("AUTHSVC_AUDIENCE", "authsvc"),
)
SignedIn = Annotated[Principal, bearer_principal(verifier)]
CanRefund = Annotated[Principal, require_permissions(verifier, "orders:refund")]

app = FastAPI(title="orders (example)")


@app.get("/public")
async def public() -> dict[str, str]:
    return {"hello": "anyone"}


@app.get("/me")
async def me(principal: SignedIn) -> dict[str, object]:
    return {"subject": principal.subject, "roles": sorted(principal.roles)}


@app.post("/refunds")
async def refund(principal: CanRefund) -> dict[str, str]:
    return {"refunded_by": principal.subject}
