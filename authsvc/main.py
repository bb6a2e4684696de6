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

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi_users import FastAPIUsers
from fastapi_users.authentication import AuthenticationBackend, BearerTransport

import authsvc
from authsvc.api.deps import general_rate_limit, get_user_manager, limit_by_ip
from authsvc.api.errors import document_error_shapes, install_error_handlers
from authsvc.api.middleware import BodySizeLimit
from authsvc.api.routes import audit, auth, authz, health, oauth, roles, sessions, users
from authsvc.api.routes import keys as keys_routes
from authsvc.api.routes.docs import describe
from authsvc.authz.cedar import PolicyLoadError
from authsvc.authz.deps import TOKEN_URL
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
from authsvc.schemas.users import UserCreate, UserRead, UserUpdate
from authsvc.security.keys import KeyRing, load_or_create_signing_key
from authsvc.security.keystore import KeyStore
from authsvc.security.password_policy import PasswordPolicy, load_common_passwords
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import AccessTokenCodec
from authsvc.services.authz import sync_builtin
from authsvc.services.container import AppServices, RateRules
from authsvc.services.policies import PolicyStore
from authsvc.services.sessions import SessionPolicy
from authsvc.services.tokens import AccessTokenStrategy

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
    return AppServices(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        hasher=PasswordHasher(
            rounds=settings.bcrypt_rounds, max_concurrency=settings.password_hash_concurrency
        ),
        policy=PasswordPolicy(
            min_length=settings.password_min_length,
            max_length=settings.password_max_length,
            common_passwords=load_common_passwords(),
        ),
        notifier=Outbox(_notifier(settings)),
        keys=keys,
        codec=AccessTokenCodec(
            keys,
            issuer=settings.issuer,
            audience=settings.access_token_audience,
            lifetime_seconds=settings.access_token_lifetime_seconds,
            client_id=settings.client_id,
        ),
        limiter=RateLimiter(
            storage_uri=settings.ratelimit_storage_uri,
            enabled=settings.ratelimit_enabled,
            fail_open=settings.ratelimit_fail_open,
        ),
        rules=RateRules.from_settings(settings),
        token_secret=load_token_secret(settings),
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
        ),
    )


async def start_up(services: AppServices) -> None:
    """Work each process does once before serving: declare our permissions."""
    async with services.sessionmaker() as session:
        await sync_builtin(session, services.settings.default_role or None)


def _reload_on_sighup(services: AppServices) -> Callable[[], None]:
    """SIGHUP reloads the policy set (and tells the other workers). Returns the undo."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[Any]] = set()

    async def reload() -> None:
        with contextlib.suppress(PolicyLoadError):  # logged; the loaded set stays
            await services.policies.reload()

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
        if settings.migrate_on_start:
            # Alembic's env.py runs its own event loop, so it gets a thread of its own.
            await anyio.to_thread.run_sync(migrations.upgrade, settings.resolved_database_url)
        await start_up(services)
        follower = asyncio.create_task(services.policies.follow(), name="policy-follower")
        on_hangup = _reload_on_sighup(services)
        log.info("authsvc ready", extra={"issuer": settings.issuer})
        try:
            yield
        finally:
            on_hangup()
            follower.cancel()
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
    )
    app.state.services = services
    install_error_handlers(app)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_error_shapes(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=services.metrics)  # outermost: ids on every answer

    backend = AuthenticationBackend(
        name="jwt",
        transport=BearerTransport(tokenUrl=TOKEN_URL),
        get_strategy=lambda: AccessTokenStrategy(services.codec),
    )
    fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [backend])

    # Every route but the probes counts against the per-user or per-IP budget.
    limited = [Depends(general_rate_limit)]
    app.include_router(health.probes)
    app.include_router(health.metrics_router)
    app.include_router(health.keys, dependencies=limited)
    app.include_router(auth.router, prefix="/auth", dependencies=limited)
    app.include_router(
        describe(fastapi_users.get_register_router(UserRead, UserCreate)),
        prefix="/auth",
        tags=["auth"],
        dependencies=[*limited, limit_by_ip("register_ip")],
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
    # fastapi-users' /me routes; its /{id} routes are replaced by ours (permission-guarded).
    me_router = describe(fastapi_users.get_users_router(UserRead, UserUpdate))
    me_router.routes = [r for r in me_router.routes if getattr(r, "path", "") == "/me"]
    app.include_router(me_router, prefix="/users", tags=["users"], dependencies=limited)
    app.include_router(sessions.auth_router, prefix="/auth", dependencies=limited)
    app.include_router(sessions.me_router, prefix="/users", dependencies=limited)
    app.include_router(users.router, prefix="/users", dependencies=limited)
    app.include_router(sessions.admin_router, prefix="/users", dependencies=limited)
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
