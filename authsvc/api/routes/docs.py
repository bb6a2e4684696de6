"""The API explorer pages (``/docs``, ``/redoc``), served with their scripts from authsvc
itself, and OpenAPI summaries for the routes fastapi-users builds (verify, reset).

The Swagger UI and ReDoc bundles come from the installed ``fastapi-offline`` package (MIT;
it ships ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``): the pages work
offline and load no third-party code at run time. Only its files are used, not its app.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from authsvc.api.security_headers import HTML_HEADERS, page_policy

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))

_DOCS: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/request-verify-token"): (
        "Send an email-verification token",
        "Always 202, whether or not the email exists. Registration already sends one; this "
        "sends a fresh one (an unverified account cannot sign in while "
        "`AUTHSVC_REQUIRE_VERIFIED_EMAIL` is on). The token goes out through the configured "
        "notifier (SMTP, or stdout in development). Limited per client IP.",
    ),
    ("POST", "/verify"): (
        "Verify an email address with a token",
        "The token from the registration mail or `POST /auth/request-verify-token`; it is "
        "bound to the address it was sent to. Audited. 400 `VERIFY_USER_BAD_TOKEN` for an "
        "invalid or expired token, `VERIFY_USER_ALREADY_VERIFIED` when there is nothing to do.",
    ),
    ("POST", "/forgot-password"): (
        "Send a password-reset token",
        "Always 202, whether or not the email exists. The token goes out through the "
        "configured notifier and stops working once the password changes. Limited per IP.",
    ),
    ("POST", "/reset-password"): (
        "Set a new password with a reset token",
        "400 `RESET_PASSWORD_BAD_TOKEN` for an invalid, expired or used token; "
        "`RESET_PASSWORD_INVALID_PASSWORD` with the policy's reason.",
    ),
}


def describe(router: APIRouter) -> APIRouter:
    """Set summaries and descriptions on a fastapi-users router before it is included."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            docs = _DOCS.get((method, route.path))
            if docs is not None:
                route.summary, route.description = docs
    return router


# The one URL the ReDoc bundle loads by itself: its sidebar logo, from Redocly's CDN. The
# page's policy would block it (and log an error); an empty local image takes its place.
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_NO_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    return (ASSETS_DIR / "redoc.standalone.js").read_bytes().replace(_REDOC_LOGO, _NO_IMAGE)


def _page(response: HTMLResponse, *, workers: bool = False) -> HTMLResponse:
    html = bytes(response.body).decode()
    headers = {"Content-Security-Policy": page_policy(html, workers=workers), **HTML_HEADERS}
    return HTMLResponse(html, headers=headers)


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Swagger UI at ``docs_url`` (with its OAuth2 redirect page) and ReDoc at ``redoc_url``,
    their assets under ``ASSETS_URL``. Create the app with ``docs_url=None, redoc_url=None``."""

    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_bundle() -> Response:  # before the mount, which would serve the original
        return Response(_redoc_bundle(), media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                oauth2_redirect_url=f"{root}{redirect_url}",
                init_oauth=app.swagger_ui_init_oauth,
                # No badge from the public validator service: nothing is fetched from elsewhere.
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
            )
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            ),
            workers=True,
        )
