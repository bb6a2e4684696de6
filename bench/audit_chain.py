"""Logins per second with and without the audit hash chain, in one run, interleaved.

Builds the real app in-process (httpx ASGITransport, no sockets; SQLite in a temporary folder,
or ``--database-url`` for PostgreSQL; rate limits off), creates ``--users`` accounts, then runs
rounds of ``--duration`` seconds in which ``--concurrency`` tasks sign in (password grant, right
password) as fast as they can. Rounds alternate: chain on, chain off (the flush listener
swapped in-process for one that fills seq from a counter — a bench switch, not a setting), so both
see the same machine conditions. It prints logins/s per round and the medians.

Each sign-in must write an audit event for the chain to cost anything. When the password grant
does not record one itself (before the sign-in events of issue 13 are merged), the bench adds
one ``auth.login.success`` event to the sign-in's own transaction, as the grant would, and says
so. ``--hash cheap`` uses a test-sized Argon2id (1 MiB, t=1) so the chain's cost is not hidden
behind the password hash; ``--hash default`` is what production logins cost.

    python bench/audit_chain.py [--rounds 6] [--duration 5] [--concurrency 8]
                                [--hash default|cheap] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.db.models import AuditEvent, User
from authsvc.main import create_app, start_up
from authsvc.services import audit_chain
from authsvc.services.audit import LOGIN_SUCCEEDED, AuditService
from authsvc.services.container import AppServices
from authsvc.services.issuer import TokenIssuer

PASSWORD = "bench passphrase that is long"


async def make_users(services: AppServices, count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]  # a database given by URL may hold an earlier run's users
    emails = [f"bench{n}.{run}@example.com" for n in range(count)]
    hashed = await services.hasher.hash(PASSWORD)
    async with services.sessionmaker() as session:
        session.add_all(
            User(email=e, hashed_password=hashed, is_active=True, is_verified=True) for e in emails
        )
        await session.commit()
    return emails


async def login_events(services: AppServices) -> int:
    async with services.sessionmaker() as session:
        query = select(func.count()).where(AuditEvent.action == LOGIN_SUCCEEDED)
        return int((await session.execute(query)).scalar_one())


def audit_sign_ins_in_the_bench() -> None:
    """Stand-in for the password grant's own sign-in event: recorded in the sign-in's
    transaction, last, after its reads and the signing, just before the issuer commits (so
    the head row's lock lasts only the flush and the commit)."""
    for_user: Callable[..., Awaitable[Any]] = TokenIssuer.for_user

    async def for_user_audited(self: TokenIssuer, user: User, *args: Any) -> Any:
        sign_then_commit = self._sign_then_commit

        async def audited(*inner: Any, **named: Any) -> Any:
            AuditService(self.db).record(LOGIN_SUCCEEDED, "user", str(user.id), None, None)
            return await sign_then_commit(*inner, **named)

        self._sign_then_commit = audited  # type: ignore[method-assign]
        return await for_user(self, user, *args)

    TokenIssuer.for_user = for_user_audited  # type: ignore[method-assign, assignment]


# Far above the chain's seqs; restarted above the table's highest seq for each run.
_unchained_seq = itertools.count(10**15)


def _fill_unchained(session: Session, _context: object, _instances: object) -> None:
    """The "without" rounds: the row as it was before the chain (the columns are NOT NULL,
    so a unique seq from a process counter, no lock, no digest, no head)."""
    for item in session.new:
        if isinstance(item, AuditEvent):
            item.seq, item.prev_digest, item.digest = next(_unchained_seq), "", ""


def chain(enabled: bool) -> None:
    if enabled:
        if event.contains(Session, "before_flush", _fill_unchained):
            event.remove(Session, "before_flush", _fill_unchained)
        audit_chain.install()
    else:
        audit_chain.uninstall()
        event.listen(Session, "before_flush", _fill_unchained)


async def storm(client: httpx.AsyncClient, emails: list[str], seconds: float, tasks: int) -> float:
    stop = time.perf_counter() + seconds
    done = 0

    async def worker(number: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            email = emails[(number + done) % len(emails)]
            form = {"grant_type": "password", "username": email, "password": PASSWORD}
            response = await client.post("/auth/token", data=form)
            assert response.status_code == 200, response.text
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    return done / (time.perf_counter() - began)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        values: dict[str, Any] = {"data_dir": Path(folder), "ratelimit_enabled": False}
        if args.database_url:
            values["database_url"] = args.database_url
        if args.hash == "cheap":
            values.update(argon2_memory_kib=1024, argon2_time_cost=1)
        settings = Settings(_env_file=None, **values)
        await asyncio.to_thread(migrations.upgrade, settings.resolved_database_url)
        app = create_app(settings)
        services: AppServices = app.state.services
        await start_up(services)
        emails = await make_users(services, args.users)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        results: dict[str, list[float]] = {"with chain": [], "without chain": []}
        statements = dict.fromkeys(results, 0)
        logins = dict.fromkeys(results, 0)
        mode = "with chain"

        def count(*_: Any) -> None:  # SQL statements per sign-in: the chain's exact cost
            statements[mode] += 1

        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            before = await login_events(services)
            await storm(client, emails, 0.5, args.concurrency)  # warm-up
            stand_in = await login_events(services) == before
            global _unchained_seq
            async with services.sessionmaker() as session:
                highest = (await session.execute(select(func.max(AuditEvent.seq)))).scalar()
            _unchained_seq = itertools.count(max(10**15, (highest or 0) + 1))
            event.listen(services.engine.sync_engine, "before_cursor_execute", count)
            if stand_in:
                audit_sign_ins_in_the_bench()
            for round_number in range(args.rounds):
                for mode in results:  # count() reads `mode`: statements land per mode
                    chain(mode == "with chain")
                    before = await login_events(services)
                    rate = await storm(client, emails, args.duration, args.concurrency)
                    results[mode].append(rate)
                    logins[mode] += await login_events(services) - before
                    print(f"round {round_number + 1} {mode:<14} {rate:8.1f} logins/s")
            chain(True)
            events = await login_events(services)
        await services.engine.dispose()
    backend = settings.database_backend
    print(
        f"\naudit chain: {args.rounds} interleaved rounds of {args.duration:g} s, "
        f"{args.concurrency} concurrent sign-ins, {backend}, Argon2id {args.hash}"
        + (" (sign-in event recorded by the bench's stand-in)" if stand_in else "")
    )
    for mode, rates in results.items():
        print(f"{mode:<14} median {statistics.median(rates):8.1f} logins/s  {rates}")
    for mode in results:
        # Two counting queries per round are included; negligible against thousands.
        print(f"{mode:<14} {statements[mode] / max(1, logins[mode]):.2f} SQL statements a sign-in")
    ratio = statistics.median(results["with chain"]) / statistics.median(results["without chain"])
    print(f"with/without: {ratio:.3f}")
    print(
        f"{events} sign-in events written (the unchained rounds' rows break the chain: bench only)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--hash", choices=["default", "cheap"], default="default")
    parser.add_argument("--database-url", default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
