"""FastAPI dependencies for services protected by authsvc tokens.

    verifier = TokenVerifier(issuer="https://auth.example.com", audience="authsvc")
    CanRefund = Annotated[Principal, require_permissions(verifier, "orders:refund")]

    @app.post("/orders/{id}/refund")
    async def refund(id: str, principal: CanRefund) -> ...

401 answers carry ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3.1); a missing
permission is 403 ``insufficient_scope``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request

from authsvc.authz.permissions import grants
from authsvc.client.verifier import InvalidToken, TokenVerifier


@dataclass(frozen=True)
class Principal:
    subject: str
    client_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    claims: dict[str, Any] = field(default_factory=dict)

    def has(self, permission: str) -> bool:
        return any(grants(held, permission) for held in self.permissions)


def _challenge(error: str, description: str, status: int = 401) -> HTTPException:
    return HTTPException(
        status,
        detail={"code": error.upper(), "message": description},
        headers={"WWW-Authenticate": f'Bearer error="{error}", error_description="{description}"'},
    )


def _strings(value: object) -> frozenset[str]:
    return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()


def bearer_principal(verifier: TokenVerifier) -> Any:
    """A dependency answering the caller's ``Principal`` (401 without a valid token)."""

    async def principal(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                detail={"code": "NOT_AUTHENTICATED", "message": "Bearer token required."},
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            claims = await verifier.verify(token.strip())
        except InvalidToken:
            raise _challenge("invalid_token", "The access token is invalid or expired.") from None
        return Principal(
            subject=str(claims["sub"]),
            client_id=claims.get("client_id"),
            roles=_strings(claims.get("roles")),
            permissions=_strings(claims.get("permissions")),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            claims=claims,
        )

    return Depends(principal)


def require_permissions(verifier: TokenVerifier, *permissions: str) -> Any:
    authenticated = bearer_principal(verifier)

    # A default, not Annotated: the annotations are strings (PEP 563), and FastAPI cannot
    # resolve a closure variable named in one.
    async def check(principal: Principal = authenticated) -> Principal:
        missing = [p for p in permissions if not principal.has(p)]
        if missing:
            raise _challenge("insufficient_scope", f"Permission {missing[0]} is required.", 403)
        return principal

    return Depends(check)


def require_scopes(verifier: TokenVerifier, *scopes: str) -> Any:
    authenticated = bearer_principal(verifier)

    # A default, not Annotated: the annotations are strings (PEP 563), and FastAPI cannot
    # resolve a closure variable named in one.
    async def check(principal: Principal = authenticated) -> Principal:
        missing = [s for s in scopes if s not in principal.scopes]
        if missing:
            raise _challenge("insufficient_scope", f"Scope {missing[0]} is required.", 403)
        return principal

    return Depends(check)
