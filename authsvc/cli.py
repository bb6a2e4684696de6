"""``authsvc serve | migrate | create-admin | keys | routes | policies | audit``.

``serve`` does the first-start work (migrations, signing key, token secret) once in the parent
process, before any worker exists, so several workers never race to create them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from authsvc.authz.cedar import PolicyBundle, PolicyLoadError
from authsvc.config import Settings, get_settings, issuer_for_bind
from authsvc.security.keys import KeyLoadError

log = logging.getLogger("authsvc")


def _configure_logging(settings: Settings) -> None:
    from authsvc.main import configure_logging

    configure_logging(settings)
    # Alembic narrates its plugin set-up at INFO; keep the start-up log readable.
    logging.getLogger("alembic").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )


def _ensure_data_dir(settings: Settings) -> None:
    # It holds the password hashes (SQLite), the signing key and the token secret: owner only.
    if not settings.data_dir.exists():
        settings.data_dir.mkdir(mode=0o700, parents=True)


async def _sync_permissions(settings: Settings) -> None:
    """Declare the built-in permissions once, before the workers start."""
    from authsvc.db.session import create_engine, create_sessionmaker
    from authsvc.services.roles import sync_builtin

    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await sync_builtin(session, settings.default_role or None)
    finally:
        await engine.dispose()


class DatabaseUnreachable(Exception):
    """The database is down while a command needs it now; ``main`` prints one clear line."""


def _migrate(settings: Settings, revision: str = "head", *, sync: bool = False) -> None:
    from authsvc.db import migrations
    from authsvc.main import database_outage

    try:
        migrations.upgrade(settings.resolved_database_url, revision)
        if sync:
            asyncio.run(_sync_permissions(settings))
    except Exception as exc:
        if not database_outage(exc):
            raise
        raise DatabaseUnreachable(
            f"the database is not reachable ({type(exc).__name__}), so the migrations cannot "
            "run. Start it and run the command again; or migrate once it is up (`authsvc "
            "migrate`) and serve with AUTHSVC_MIGRATE_ON_START=false: workers then start "
            "without the database and become ready when it is back."
        ) from exc


def _prepare(settings: Settings) -> None:
    """Everything a worker expects to exist: the data directory, schema, key and secret.

    With AUTHSVC_MIGRATE_ON_START (the default) the database must be up: the schema is made
    current before any worker exists, or ``serve`` stops with a clear error (exit 1) rather
    than start workers on a schema it could not check. Workers themselves never need it to
    start (see ``main.create_app``'s lifespan).
    """
    from authsvc.main import build_keystore, load_token_secret
    from authsvc.security.keys import load_or_create_signing_key

    _ensure_data_dir(settings)
    if settings.migrate_on_start:
        _migrate(settings, sync=True)
    keystore = build_keystore(settings)
    if keystore is None:
        load_or_create_signing_key(settings.resolved_signing_key_file, settings.signing_algorithm)
    else:
        keystore.ensure(legacy_file=settings.resolved_signing_key_file)
        keystore.load()  # refuse to start on an unreadable key
    load_token_secret(settings)
    _load_policies(settings)  # refuse to start on an invalid set, before any worker


def _load_policies(settings: Settings, directory: Path | None = None) -> PolicyBundle:
    from authsvc.services.policies import load_verified

    return load_verified(directory or settings.resolved_policies_dir)


def cmd_policies(settings: Settings, args: argparse.Namespace) -> int:
    from authsvc.authz.policytests import run_folder

    directory = args.dir or settings.resolved_policies_dir
    bundle = _load_policies(settings, directory)  # PolicyLoadError: reported by main()
    if args.action == "check":
        print(f"{len(bundle.files)} policies valid in {directory} (digest {bundle.digest[:12]})")
        return 0
    cases = args.cases or directory / "tests"
    results = run_folder(bundle, cases)
    for result in results:
        mark = "ok  " if result.passed else "FAIL"
        print(f"{mark} {result.file}: {result.name}: {result.message}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed ({cases})")
    if not results:
        print(f"error: no test cases in {cases}", file=sys.stderr)
        return 1
    return 1 if failed else 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    _prepare(settings)
    if args.workers > 1 and settings.ratelimit_storage_uri.startswith("memory://"):
        log.warning(
            "%d workers with memory:// rate-limit storage: each worker counts on its own, so "
            "limits are up to %d times looser; set AUTHSVC_RATELIMIT_STORAGE_URI=redis://...",
            args.workers,
            args.workers,
        )
    # The schema is current now; workers need not each run the migrations again.
    os.environ["AUTHSVC_MIGRATE_ON_START"] = "false"
    issuer = settings.issuer
    if not settings.issuer_configured:
        # Where this server listens, not a fixed port 8000 it may not be on. Workers read
        # their settings afresh (main.app_factory): they learn it from the environment.
        issuer = issuer_for_bind(args.host, args.port)
        os.environ["AUTHSVC_ISSUER"] = issuer
    # With one worker the app runs in this process, whose settings were read (and cached)
    # before the two values above were set: read them afresh, as separate workers do.
    get_settings.cache_clear()
    log.info(
        "serving on http://%s:%d (issuer %s, database %s, %d worker(s))",
        args.host,
        args.port,
        issuer,
        settings.database_backend,
        args.workers,
    )
    uvicorn.run(
        "authsvc.main:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # The client IP comes from the socket unless AUTHSVC_TRUSTED_PROXIES says otherwise;
        # uvicorn's own X-Forwarded-For handling would trust 127.0.0.1 by default.
        proxy_headers=False,
        server_header=False,
        log_level=settings.log_level.lower(),
        # Workers configure logging themselves (app_factory): JSON with request ids.
        log_config=None,
    )
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    _ensure_data_dir(settings)
    _migrate(settings, args.revision)
    print(f"database at revision {args.revision} ({settings.database_backend})")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Repeat password: ")
    if first != second:
        raise SystemExit("error: the passwords do not match")
    return first


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from authsvc.services.admin import AdminCreationError, create_admin

    password = _read_password(args)
    _ensure_data_dir(settings)
    try:
        user_id = asyncio.run(create_admin(settings, args.email, password))
    except AdminCreationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created superuser {args.email} ({user_id})")
    return 0


def cmd_routes(settings: Settings, args: argparse.Namespace) -> int:
    import tempfile

    from authsvc.api.routes_table import render_routes_table
    from authsvc.main import create_app

    # Only the route declarations are needed: build the app against a throw-away folder.
    with tempfile.TemporaryDirectory() as scratch:
        offline = settings.model_copy(
            update={"data_dir": Path(scratch), "database_url": None, "signing_key_file": None}
        )
        print(render_routes_table(create_app(offline)), end="")
    return 0


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from authsvc.main import build_keystore

    keystore = build_keystore(settings)
    if keystore is None:
        print("error: AUTHSVC_SIGNING_KEY_FILE names one key file; rotate by replacing it",
              file=sys.stderr)  # fmt: skip
        return 1
    _ensure_data_dir(settings)
    keystore.ensure(legacy_file=settings.resolved_signing_key_file)
    if args.action == "rotate":
        key = keystore.rotate()
        when = datetime.fromtimestamp(key.activates_at, UTC).isoformat()
        print(f"new key {key.kid} ({key.alg}) published now, signs from {when}")
        return 0
    for key in reversed(keystore.load()):
        when = datetime.fromtimestamp(key.activates_at, UTC).isoformat()
        print(f"{key.kid}  {key.alg}  signs from {when}")
    return 0


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from authsvc.db.session import create_engine, create_sessionmaker
    from authsvc.schemas.audit import ChainReport
    from authsvc.services import audit_chain

    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            if args.action == "verify":
                report = await audit_chain.verify(session)
                found = ChainReport.model_validate(report, from_attributes=True)
                print(found.model_dump_json())
                return 0 if report.intact else 1
            with ExitStack() as stack:
                out = (
                    stack.enter_context(args.output.open("w", encoding="utf-8"))
                    if args.output
                    else sys.stdout
                )
                async for line in audit_chain.export_lines(session, args.since):
                    out.write(line + "\n")
            return 0
    finally:
        await engine.dispose()


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "verify" and (args.since or args.output):
        print("error: --since and --output are for export", file=sys.stderr)
        return 2
    from authsvc.main import database_outage

    try:
        return asyncio.run(_audit(settings, args))
    except Exception as exc:
        if not database_outage(exc):
            raise
        raise DatabaseUnreachable(
            f"the database is not reachable ({type(exc).__name__}); start it and run the "
            "command again"
        ) from exc


def _aware_datetime(value: str) -> datetime:
    """``--since``: ISO 8601; without an offset it is UTC (the trail's time zone)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authsvc", description="Authentication and user-management service."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    admin = sub.add_parser(
        "create-admin",
        help="create a verified superuser; the password is read from a prompt or stdin",
    )
    admin.add_argument("--email", required=True)
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )
    admin.set_defaults(func=cmd_create_admin)
    keys = sub.add_parser("keys", help="list or rotate the signing keys")
    keys.add_argument("action", choices=["list", "rotate"])
    keys.set_defaults(func=cmd_keys)

    routes = sub.add_parser("routes", help="print the route table (Markdown) with permissions")
    routes.set_defaults(func=cmd_routes)

    policies = sub.add_parser(
        "policies",
        help="check: validate the policies against the schema; test: run policies/tests/*.json",
    )
    policies.add_argument("action", choices=["check", "test"])
    policies.add_argument(
        "--dir", type=Path, default=None, help="the policy folder (default: AUTHSVC_POLICIES_DIR)"
    )
    policies.add_argument(
        "--cases", type=Path, default=None, help="the test case folder (default: <dir>/tests)"
    )
    policies.set_defaults(func=cmd_policies)

    audit = sub.add_parser(
        "audit",
        help="verify: check the security trail's hash chain (exit 1 if broken); export: the "
        "trail as JSON lines in chain order, for a SIEM",
    )
    audit.add_argument("action", choices=["verify", "export"])
    audit.add_argument(
        "--since", type=_aware_datetime, default=None, help="export events from then (ISO 8601)"
    )
    audit.add_argument("--output", type=Path, default=None, help="export to a file, not stdout")
    audit.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    try:
        code: int = args.func(settings, args)
    except (KeyLoadError, PolicyLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
