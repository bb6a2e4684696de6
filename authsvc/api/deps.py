"""Reusable dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import User
from authsvc.db.repositories.users import UserDatabase
from authsvc.ratelimit.keys import client_ip
from authsvc.ratelimit.limiter import Rule
from authsvc.services.callers import Caller, ClientCaller, UserCaller
from authsvc.services.container import AppServices
from authsvc.services.users import UserManager

log = logging.getLogger("authsvc.db")


def get_services(request: Request) -> AppServices:
    services: AppServices = request.app.state.services
    return services


ServicesDep = Annotated[AppServices, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    session = services.sessionmaker()
    try:
        yield session
    finally:
        try:
            await session.close()
        except (DBAPIError, OSError) as exc:
            # The connection broke under the request (a database outage): the answer (503)
            # is sent already; drop the connection instead of failing in the teardown.
            log.warning("database session not closed cleanly (%s)", type(exc).__name__)
            with contextlib.suppress(DBAPIError, OSError):
                await session.invalidate()


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_user_manager(
    services: ServicesDep, session: SessionDep, request: Request
) -> AsyncIterator[UserManager]:
    settings = services.settings
    yield UserManager(
        UserDatabase(session, User),
        hasher=services.hasher,
        policy=services.policy,
        notifier=services.notifier,
        token_secret=services.token_secret,
        verify_lifetime=settings.verify_token_lifetime_seconds,
        reset_lifetime=settings.reset_token_lifetime_seconds,
        public_url=settings.public_url,
        session=session,
        default_role=settings.default_role or None,
        client_ip=get_client_ip(request, services),  # for the audit trail
    )


UserManagerDep = Annotated[UserManager, Depends(get_user_manager)]


def get_client_ip(request: Request, services: ServicesDep) -> str:
    peer = request.client.host if request.client else None
    return client_ip(
        peer, request.headers.get("x-forwarded-for"), services.settings.trusted_proxies
    )


ClientIP = Annotated[str, Depends(get_client_ip)]


def limit_by_ip(pick: str) -> Any:
    """A dependency that counts the request against the named per-IP rule."""

    def dependency(services: ServicesDep, ip: ClientIP) -> None:
        rule: Rule = getattr(services.rules, pick)
        services.limiter.hit(rule, ip)

    return Depends(dependency)


def bearer_token(request: Request) -> str | None:
    """The credentials of ``Authorization: Bearer <token>`` (RFC 6750 §2.1), else None.

    Read from the header here rather than through the OpenAPI security scheme, so that a
    route's documentation shows a lock only where a guard needs a caller."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


async def get_caller(request: Request, services: ServicesDep, db: SessionDep) -> Caller:
    """Who is calling, resolved once per request (FastAPI caches it for every dependency of
    the request that asks): the rate limiter, the guards and the routes share the answer."""
    caller = await services.callers.resolve(db, bearer_token(request))
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def general_rate_limit(caller: CallerDep, services: ServicesDep, ip: ClientIP) -> None:
    """Applied to every route: per resolved caller (user or service client), else per client
    IP; a refused token counts as anonymous."""
    if isinstance(caller, UserCaller | ClientCaller):
        services.limiter.hit(services.rules.authenticated, caller.rate_key)
        return
    services.limiter.hit(services.rules.anonymous, ip)
