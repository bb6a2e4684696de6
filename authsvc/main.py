"""``create_app(settings)``: the only place where concrete parts are chosen and wired."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import asyncpg.exceptions  # type: ignore[import-untyped]
from fastapi import Depends, FastAPI
from fastapi_users import FastAPIUsers
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import authsvc
from authsvc.api.deps import general_rate_limit, get_user_manager, limit_by_ip
from authsvc.api.errors import document_error_shapes, install_error_handlers
from authsvc.api.input_guard import NulByteGuard
from authsvc.api.middleware import BodySizeLimit
from authsvc.api.routes import (
    audit,
    auth,
    authz,
    health,
    me,
    mfa,
    mfa_admin,
    oauth,
    roles,
    sessions,
    throttle,
    users,
)
from authsvc.api.routes import email as email_routes
from authsvc.api.routes import keys as keys_routes
from authsvc.api.routes import register as register_routes
from authsvc.api.routes.docs import describe, install_docs
from authsvc.api.security_headers import SecurityHeaders
from authsvc.authz.cedar import PolicyLoadError
from authsvc.config import Settings, get_settings
from authsvc.db import migrations
from authsvc.db.models import User
from authsvc.db.session import create_engine, create_sessionmaker
from authsvc.notify.base import Notifier
from authsvc.notify.console import ConsoleNotifier
from authsvc.notify.outbox import Outbox
from authsvc.notify.smtp import SmtpNotifier
from authsvc.observability import JsonFormatter, Metrics, RequestContext
from authsvc.ratelimit.limiter import RateLimiter
from authsvc.ratelimit.rules import RateRules
from authsvc.schemas.users import UserRead
from authsvc.security.keys import KeyRing, load_or_create_signing_key
from authsvc.security.keystore import KeyStore
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import hasher_from_settings
from authsvc.security.tokens import AccessTokenCodec
from authsvc.services.audit import AuditService
from authsvc.services.callers import CallerResolver
from authsvc.services.container import AppServices
from authsvc.services.grants import (
    ClientCredentialsGrant,
    GrantRegistry,
    MfaGrant,
    PasswordGrant,
    RefreshTokenGrant,
)
from authsvc.services.mfa import MfaKit
from authsvc.services.policies import PolicyStore, reload_recorded
from authsvc.services.roles import sync_builtin
from authsvc.services.sessions import SessionPolicy

log = logging.getLogger("authsvc")


def _notifier(settings: Settings) -> Notifier:
    if settings.notifier == "smtp":
        return SmtpNotifier(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_sender,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_seconds,
            ca_file=settings.smtp_ca_file,
        )
    return ConsoleNotifier()


def load_token_secret(settings: Settings) -> str:
    """The HS256 secret for verify/reset tokens: from settings, else generated once and kept
    in the data directory (development only; settings refuse production without one)."""
    if settings.token_secret is not None:
        return settings.token_secret.get_secret_value()
    path: Path = settings.data_dir / "token-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x", encoding="utf-8") as handle:
                path.chmod(0o600)
                handle.write(secrets.token_urlsafe(48))
        except FileExistsError:
            pass  # another worker wrote it first; use theirs
    return path.read_text(encoding="utf-8").strip()


def build_keystore(settings: Settings) -> KeyStore | None:
    """The rotating key store in ``<data_dir>/keys``, unless one key file is configured."""
    if settings.signing_key_file is not None:
        return None
    kek = settings.key_encryption_key
    return KeyStore(
        settings.keys_dir,
        settings.signing_algorithm,
        token_lifetime_seconds=settings.access_token_lifetime_seconds,
        activation_delay_seconds=settings.key_activation_delay_seconds,
        kek=kek.get_secret_value().encode() if kek else None,
    )


def build_services(settings: Settings) -> AppServices:
    keystore = build_keystore(settings)
    if keystore is None:
        # An explicit key file: one key, rotated by replacing the file.
        key_file = settings.resolved_signing_key_file
        keys = KeyRing([load_or_create_signing_key(key_file, settings.signing_algorithm)])
    else:
        keystore.ensure(legacy_file=settings.resolved_signing_key_file)
        keys = KeyRing(keystore.load(), loader=keystore.load)
    engine = create_engine(settings.resolved_database_url)
    metrics = Metrics()
    token_secret = load_token_secret(settings)
    codec = AccessTokenCodec(
        keys,
        issuer=settings.issuer,
        audience=settings.access_token_audience,
        lifetime_seconds=settings.access_token_lifetime_seconds,
        client_id=settings.client_id,
    )
    return AppServices(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        hasher=hasher_from_settings(settings),
        policy=PasswordPolicy.from_settings(settings),
        notifier=Outbox(_notifier(settings)),
        keys=keys,
        codec=codec,
        callers=CallerResolver(codec),
        limiter=RateLimiter(
            storage_uri=settings.ratelimit_storage_uri,
            enabled=settings.ratelimit_enabled,
            fail_open=settings.ratelimit_fail_open,
        ),
        rules=RateRules.from_settings(settings),
        token_secret=token_secret,
        keystore=keystore,
        metrics=metrics,
        # Raises PolicyLoadError (naming file and policy id) on an invalid set: no start.
        policies=PolicyStore(
            settings.resolved_policies_dir, settings.policy_reload_marker, metrics
        ),
        session_policy=SessionPolicy(
            idle_seconds=settings.refresh_idle_seconds,
            lifetime_seconds=settings.session_lifetime_seconds,
            reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
            reuse_grace_max=settings.refresh_reuse_grace_max,
        ),
        # One line a grant type; discovery lists them in this order.
        grants=GrantRegistry(
            [PasswordGrant(), RefreshTokenGrant(), ClientCredentialsGrant(), MfaGrant()]
        ),
        mfa=MfaKit(settings, token_secret),
    )


async def start_up(services: AppServices) -> None:
    """Work each process does once before serving: declare our permissions."""
    async with services.sessionmaker() as session:
        await sync_builtin(session, services.settings.default_role or None)


# A worker starts during a database outage, and finishes its start-up work once it is back.
_START_UP_PROBE_SECONDS = 5.0
_START_UP_RETRY_FIRST_SECONDS = 0.5
_START_UP_RETRY_MAX_SECONDS = 10.0
_ASYNCPG_OUTAGES = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08: cannot connect, connection lost
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def database_outage(exc: BaseException) -> bool:
    """The database cannot be reached right now (refused, reset, timed out, starting or
    shutting down): worth waiting out. A schema or programming error is not."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, PoolTimeout, *_ASYNCPG_OUTAGES)):
            return True  # OSError includes ConnectionRefusedError and TimeoutError
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


async def _start_up_work(services: AppServices) -> None:
    """The lifespan's database work: migrations if asked, then ``start_up``. A quick probe
    first, so an unreachable host costs seconds, not the driver's connect timeout."""
    settings = services.settings
    with anyio.fail_after(_START_UP_PROBE_SECONDS):
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    if settings.migrate_on_start:
        # Alembic's env.py runs its own event loop, so it gets a thread of its own.
        await anyio.to_thread.run_sync(migrations.upgrade, settings.resolved_database_url)
    await start_up(services)


async def _finish_start_up(app: FastAPI, services: AppServices) -> None:
    """Retry the start-up work with backoff until it is done; then ``/readyz`` says ready."""
    delay, attempt = _START_UP_RETRY_FIRST_SECONDS, 1
    while True:
        await asyncio.sleep(delay)
        attempt += 1
        try:
            await _start_up_work(services)
        except Exception as exc:  # noqa: BLE001 - logged; the worker keeps serving, not ready
            delay = min(delay * 2, _START_UP_RETRY_MAX_SECONDS)
            if database_outage(exc):
                log.warning(
                    "database still unreachable, start-up work retried in %.1f s "
                    "(attempt %d: %s)", delay, attempt, type(exc).__name__,
                )  # fmt: skip
            else:
                log.error(
                    "start-up database work failed, retried in %.1f s (attempt %d)",
                    delay, attempt, exc_info=True,
                )  # fmt: skip
            continue
        app.state.start_up_done = True
        log.info("start-up database work done (attempt %d): ready", attempt)
        return


def _reload_on_sighup(services: AppServices) -> Callable[[], None]:
    """SIGHUP reloads the policy set (and tells the other workers). Returns the undo."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[Any]] = set()

    async def reload() -> None:
        # Recorded like a reload by HTTP, with no actor (whoever may signal the process). The
        # set is swapped before anything is written, so a database outage costs only the event.
        try:
            async with services.sessionmaker() as db:
                await reload_recorded(services.policies, AuditService(db))
        except PolicyLoadError:
            pass  # logged; the loaded set stays
        except Exception:
            log.error("the SIGHUP policy reload could not be audited", exc_info=True)

    def handle() -> None:
        task = loop.create_task(reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, handle)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # /readyz answers 503 while this is False. A worker that starts (or that uvicorn
        # restarts) during a database outage serves what needs no database (/healthz, the
        # JWKS) and finishes this work in the background; any other failure stops the start.
        app.state.start_up_done = False
        finisher: asyncio.Task[None] | None = None
        try:
            await _start_up_work(services)
        except Exception as exc:
            if not database_outage(exc):
                raise
            log.warning(
                "database unreachable at start-up (%s): serving without it, /readyz answers "
                "503 until the start-up work is done; retrying in the background",
                type(exc).__name__,
            )
            finisher = asyncio.create_task(_finish_start_up(app, services), name="start-up")
        else:
            app.state.start_up_done = True
        follower = asyncio.create_task(services.policies.follow(), name="policy-follower")
        on_hangup = _reload_on_sighup(services)
        log.info("authsvc ready" if finisher is None else "authsvc serving, not ready yet",
                 extra={"issuer": settings.issuer})  # fmt: skip
        try:
            yield
        finally:
            on_hangup()
            follower.cancel()
            if finisher is not None:
                finisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await finisher
            await services.notifier.drain(timeout=settings.smtp_timeout_seconds + 5)
            await services.engine.dispose()

    app = FastAPI(
        title="authsvc",
        version=authsvc.__version__,
        description=(
            "Authentication and user management. Get a token at `POST /auth/token` "
            "(the Authorize button does it for you), then call the user routes."
        ),
        lifespan=lifespan,
        docs_url=None,  # install_docs: the explorer's assets come from us, not a CDN
        redoc_url=None,
    )
    app.state.services = services
    install_docs(app)
    install_error_handlers(app)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_error_shapes(default_openapi(), app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(NulByteGuard)  # inside BodySizeLimit: reads only capped bodies
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestContext, metrics=services.metrics)  # outermost: ids on every answer

    # fastapi-users keeps verification and reset; registration (which must not tell who is
    # registered) and who is calling (api.deps.get_caller) are ours, so it gets no
    # authentication backend.
    fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [])

    # Every route but the probes, the docs and the well-known documents counts against the
    # per-user or per-IP budget.
    limited = [Depends(general_rate_limit)]
    app.include_router(health.probes)
    app.include_router(health.metrics_router)
    app.include_router(health.keys)
    app.include_router(auth.router, prefix="/auth", dependencies=limited)
    app.include_router(
        register_routes.router, prefix="/auth", dependencies=[*limited, limit_by_ip("register_ip")]
    )
    for router in (
        describe(fastapi_users.get_verify_router(UserRead)),
        describe(fastapi_users.get_reset_password_router()),
    ):
        app.include_router(
            router,
            prefix="/auth",
            tags=["auth"],
            dependencies=[*limited, limit_by_ip("password_reset_ip")],
        )
    app.include_router(email_routes.router, prefix="/auth", dependencies=limited)
    app.include_router(me.router, prefix="/users", dependencies=limited)
    app.include_router(mfa.router, prefix="/users", dependencies=limited)
    app.include_router(sessions.auth_router, prefix="/auth", dependencies=limited)
    app.include_router(sessions.me_router, prefix="/users", dependencies=limited)
    app.include_router(users.router, prefix="/users", dependencies=limited)
    app.include_router(sessions.admin_router, prefix="/users", dependencies=limited)
    app.include_router(throttle.router, prefix="/users", dependencies=limited)
    app.include_router(mfa_admin.router, prefix="/users", dependencies=limited)
    app.include_router(roles.router, dependencies=limited)
    app.include_router(audit.router, dependencies=limited)
    app.include_router(oauth.router, prefix="/auth", dependencies=limited)
    app.include_router(oauth.introspection_router, prefix="/auth")
    app.include_router(oauth.clients_router, dependencies=limited)
    app.include_router(keys_routes.router, dependencies=limited)
    app.include_router(authz.router, prefix="/authz", dependencies=limited)
    return app


def configure_logging(settings: Settings) -> None:
    """Root logging for a process: JSON lines (with request ids) or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Alembic narrates its plugin set-up at INFO; keep the start-up log readable.
    logging.getLogger("alembic").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory authsvc.main:app_factory`` (each worker builds one)."""
    settings = get_settings()
    configure_logging(settings)
    return create_app(settings)
