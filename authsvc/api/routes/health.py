"""Liveness and readiness probes, the public key set and the authorization server metadata."""

from __future__ import annotations

import hmac

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from authsvc.api.deps import ServicesDep
from authsvc.api.errors import error_responses
from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.errors import NotFound, ServiceUnavailable, Unauthorized

# Probes answer load balancers and orchestrators, which poll from a few addresses: they are not
# rate-limited (a 429 would take the service out of rotation). Nor are the key set and the
# discovery document: resource servers, often many behind one NAT address, need them to
# verify tokens at all, and they are answered from memory, cheaper than a limiter's own
# bookkeeping (a round trip to Redis). Cache-Control lets clients and proxies keep them.
probes = APIRouter(tags=["health"])
keys = APIRouter(tags=["keys"])
# A verifier that meets an unknown kid refetches at once (authsvc.client does, at most every
# 30 s), so a key rotation never waits for this to run out.
_CACHE = {"Cache-Control": "public, max-age=300"}

_READY_TIMEOUT_SECONDS = 2.0


@probes.get("/healthz", summary="The process is up (not rate-limited)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get(
    "/readyz",
    summary="The database is reachable (not rate-limited)",
    description="503 `DATABASE_UNAVAILABLE` while the database is unreachable, and while this "
    "worker's start-up database work (deferred by an outage at start) is not done yet.",
    responses={503: {"description": "DATABASE_UNAVAILABLE"}},
)
async def readyz(request: Request, services: ServicesDep) -> dict[str, str]:
    try:
        with anyio.fail_after(_READY_TIMEOUT_SECONDS):
            async with services.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        raise ServiceUnavailable(
            "The database is not reachable.", code="DATABASE_UNAVAILABLE"
        ) from exc
    # Set by the lifespan (main.create_app); an app run without it (in-process tests) has none.
    if not getattr(request.app.state, "start_up_done", True):
        raise ServiceUnavailable(
            "The start-up database work is not done yet.", code="DATABASE_UNAVAILABLE"
        )
    return {"status": "ready"}


class JwkSetResponse(JSONResponse):
    media_type = "application/jwk-set+json"  # RFC 7517 §8.5.1


@keys.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify our access tokens (RFC 7517 JWK Set)",
    description="Not rate-limited; cacheable for 5 minutes (`Cache-Control`).",
    response_class=JwkSetResponse,
)
async def jwks(services: ServicesDep) -> JSONResponse:
    return JwkSetResponse(services.keys.jwks(), headers=_CACHE)


_METADATA_DESCRIPTION = (
    "Where the token endpoint and the JWKS are, and what they support: the grant types are the "
    "token endpoint's registered grants. `issuer` is the configured public issuer "
    "(`AUTHSVC_ISSUER`; unset, where `authsvc serve` listens). Token verifiers discover the "
    "JWKS from here (`authsvc.client.TokenVerifier` does). The same document answers at "
    "`/.well-known/oauth-authorization-server` (RFC 8414 §3) and "
    "`/.well-known/openid-configuration` (the OpenID Connect Discovery location, which many "
    "clients ask). Not rate-limited; cacheable for 5 minutes (`Cache-Control`)."
)


@keys.get(
    "/.well-known/oauth-authorization-server",
    summary="Authorization server metadata at its RFC 8414 §3 location",
    description=_METADATA_DESCRIPTION,
)
@keys.get(
    "/.well-known/openid-configuration",
    summary="Authorization server metadata (RFC 8414)",
    description=_METADATA_DESCRIPTION,
)
async def metadata(services: ServicesDep) -> JSONResponse:
    issuer = services.settings.issuer
    base = issuer.rstrip("/")
    algorithms = sorted({key["alg"] for key in services.keys.jwks()["keys"]})
    body = {
        "issuer": issuer,  # RFC 8414 §3.3: identical to the issuer the client expects
        "token_endpoint": f"{base}/auth/token",
        "introspection_endpoint": f"{base}/auth/introspect",
        "revocation_endpoint": f"{base}/auth/revoke",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": services.grants.grant_types,
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "scopes_supported": sorted(BUILTIN_PERMISSIONS),
        # RFC 9068 access tokens are JWTs signed with these.
        "access_token_signing_alg_values_supported": algorithms,
    }
    return JSONResponse(body, headers=_CACHE)


metrics_router = APIRouter(tags=["health"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (needs AUTHSVC_METRICS_TOKEN)",
    description="`Authorization: Bearer <AUTHSVC_METRICS_TOKEN>`. 404 `METRICS_DISABLED` while "
    "no token is configured. Counters are per worker process. Not rate-limited.",
    include_in_schema=True,
    response_class=PlainTextResponse,  # the Prometheus text format
    responses=error_responses(401, 404),
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    expected = services.settings.metrics_token
    if expected is None:
        raise NotFound("Metrics are disabled: set AUTHSVC_METRICS_TOKEN.", code="METRICS_DISABLED")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.get_secret_value().encode()
    ):
        raise Unauthorized("The metrics token is missing or wrong.", code="METRICS_TOKEN_INVALID")
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
