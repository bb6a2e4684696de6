"""Logins and the admin user list at 10,000 and at 1,000,000 users on PostgreSQL, in one run.

Starts a throw-away PostgreSQL (``tests.servers.postgres_server``; set
``AUTHSVC_TEST_POSTGRES_URL`` to use your own, empty database), migrates it, and seeds users
with asyncpg's binary COPY: rows are generated in Python, all sharing one precomputed bcrypt
hash, with addresses ``user0000001@example.com`` ... whose alphabetical order is unrelated to
their ``created_at`` (one minute apart, from 2023-01-01), like real sign-ups. 2% are inactive,
10% unverified. After each seeding step: ``VACUUM ANALYZE`` (what autovacuum does on a live
table), then, in-process through httpx's ASGITransport against ``create_app`` (bcrypt cost 4,
rate limits off):

* login: ``POST /auth/token`` (password grant) of random users, and one bcrypt verification of
  the same password measured alone in the same phase; "login minus hash" is the difference of
  their medians. The email lookup the login starts with is also timed alone (fastapi-users'
  ``get_by_email``), since that is the only part of a login that grows with the table;
* ``GET /users``: the first page, a deep page by ``cursor`` (the cursor of the row 90% down the
  list, built as the API would hand it out), the same page by ``offset`` for comparison, the
  first page with ``include_total=true``, and ``is_active=false`` (a rare filter);
* ``email_prefix`` search: a selective prefix (``user00001``: 0.01% of the users), a broad one
  (``user05``: 10%), first page and deep page by cursor, and one matching nobody (``zz``).

Every figure is the median and p95 of ``--repeat`` calls after 3 warm-up calls (the deep
``offset`` page: a fifth as many). Then, for the largest size, the PostgreSQL plans of those
queries (``EXPLAIN (ANALYZE, BUFFERS)``), the generic plan of the prefix search, and one
prepared search statement run with a series of prefixes under ``plan_cache_mode=auto`` and
``force_custom_plan``: whether PostgreSQL switches it to the generic plan after five runs (what
``list_users`` prevents with ``SET LOCAL plan_cache_mode = force_custom_plan``).

    python bench/users_scale.py [--users 1000000] [--small 10000] [--repeat 50]
        [--no-explain] [--drop-index NAME ...]

``--drop-index`` removes an index after migrating, to see what it buys (for example
``--drop-index ix_user_email_lower_pattern``). About 2 minutes on 2 cores for the default
sizes, 45 s of it seeding the million.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase
from sqlalchemy import Select, text

from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.db.models import User
from authsvc.db.repositories.users import UserCursor, UserFilter, count_query, page_query
from authsvc.main import create_app, start_up
from authsvc.services.container import AppServices
from tests.servers import postgres_server

PASSWORD = "bench passphrase that is long"
ADMIN = "admin@bench.example"
BASE = datetime(2023, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)
SELECTIVE, BROAD, NOBODY = "user00001", "user05", "zz"
COLUMNS = (
    "id", "email", "hashed_password", "is_active", "is_superuser", "is_verified", "created_at",
    "authz_version", "attributes", "email_key",
)  # fmt: skip
Step = Callable[[], Awaitable[object]]


@dataclass
class Population:
    """Who the ``i``-th user (in creation order) is, for ``total`` users at the most."""

    total: int
    multiplier: int = 0
    width: int = 7

    def __post_init__(self) -> None:
        # i -> (i * multiplier) % total is a bijection: addresses unrelated to creation order.
        self.multiplier = next(
            p for p in (7_919, 104_729, 1_299_709) if math.gcd(p, self.total) == 1
        )
        self.width = max(7, len(str(self.total)))

    def email(self, i: int) -> str:
        return f"user{(i * self.multiplier) % self.total + 1:0{self.width}d}@example.com"

    def rows(self, start: int, stop: int, hashed: str) -> Iterator[tuple[Any, ...]]:
        for i in range(start, stop):
            yield (
                uuid.uuid4(), self.email(i), hashed, i % 50 != 0, False, i % 10 != 0,
                BASE + i * STEP, 0, "{}", self.email(i),  # ASCII lowercase: its own key
            )  # fmt: skip


@dataclass
class Results:
    sizes: list[int] = field(default_factory=list)
    rows: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, size: int, middle: float, high: float) -> None:
        self.rows.setdefault(name, {})[size] = (middle, high)

    def add_samples(self, name: str, size: int, samples: list[float]) -> None:
        self.add(name, size, median(samples), p95(samples))

    def table(self) -> str:
        header = "| what | " + " | ".join(f"{n:,} users: median / p95 (ms)" for n in self.sizes)
        lines = [header + " |", "|---|" + "---|" * len(self.sizes)]
        for name, by_size in self.rows.items():
            cells = [
                f"{by_size[size][0]:.2f} / {by_size[size][1]:.2f}" if size in by_size else "-"
                for size in self.sizes
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.95) - 1)]


async def timed(step: Step, repeat: int) -> list[float]:
    for _ in range(3):
        await step()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await step()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def seed(url: str, population: Population, start: int, stop: int, hashed: str) -> float:
    began = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        chunk = 100_000
        for first in range(start, stop, chunk):
            records = population.rows(first, min(stop, first + chunk), hashed)
            await conn.copy_records_to_table("user", records=records, columns=COLUMNS)
        await conn.execute('VACUUM ANALYZE "user"')
    finally:
        await conn.close()
    return time.perf_counter() - began


async def make_admin(services: AppServices) -> None:
    async with services.sessionmaker() as session:
        session.add(
            User(
                email=ADMIN,
                hashed_password=await services.hasher.hash(PASSWORD),
                is_active=True,
                is_verified=True,
                is_superuser=True,
            )
        )
        await session.commit()


async def position(services: AppServices, i: int) -> str:
    """The cursor the API hands out for the page that ends at the ``i``-th user."""
    async with services.sessionmaker() as session:
        row = (
            await session.execute(
                text('SELECT id FROM "user" WHERE created_at = :at'), {"at": BASE + i * STEP}
            )
        ).one()
    return UserCursor(BASE + i * STEP, row.id).encode()


class Phase:
    """The measurements at one table size."""

    def __init__(
        self, client: httpx.AsyncClient, services: AppServices, population: Population, size: int
    ) -> None:
        self.client, self.services, self.population, self.size = client, services, population, size
        self.headers: dict[str, str] = {}
        self.rng = random.Random(size)

    async def login(self, email: str) -> httpx.Response:
        data = {"grant_type": "password", "username": email, "password": PASSWORD}
        response = await self.client.post("/auth/token", data=data)
        response.raise_for_status()
        return response

    async def report_matches(self) -> None:
        counts = []
        async with self.services.sessionmaker() as session:
            for prefix in (SELECTIVE, BROAD):
                found = await session.scalar(count_query(UserFilter(email_prefix=prefix)))
                counts.append(f"{prefix}: {found:,}")
        print(f"  at {self.size:,} users, matching " + ", ".join(counts))

    async def get(self, query: str) -> None:
        (await self.client.get(f"/users?{query}", headers=self.headers)).raise_for_status()

    def list_steps(self, deep: str) -> dict[str, Step]:
        offset = int(self.size * 0.9)
        return {
            "`GET /users` first page (limit 50)": lambda: self.get("limit=50"),
            "`GET /users` deep page, `cursor` at 90%": lambda: self.get(f"cursor={deep}"),
            "`GET /users` deep page, `offset` at 90% (9,000 / 900,000)": lambda: self.get(
                f"offset={offset}"
            ),
            "`GET /users?include_total=true` first page": lambda: self.get("include_total=true"),
            "`GET /users?is_active=false` first page (2% match)": lambda: self.get(
                "is_active=false"
            ),
            f"`email_prefix={SELECTIVE}` (0.01% match)": lambda: self.get(
                f"email_prefix={SELECTIVE}"
            ),
            f"`email_prefix={BROAD}` (10%) first page": lambda: self.get(f"email_prefix={BROAD}"),
            f"`email_prefix={BROAD}` deep page, `cursor` at 90%": lambda: self.get(
                f"email_prefix={BROAD}&cursor={deep}"
            ),
            f"`email_prefix={NOBODY}` (no match)": lambda: self.get(f"email_prefix={NOBODY}"),
        }

    async def run(self, results: Results, repeat: int, hashed: str) -> None:
        token = (await self.login(ADMIN)).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

        async def login() -> None:
            i = self.rng.randrange(self.size)
            await self.login(self.population.email(i + 1 if i % 50 == 0 else i))  # active

        async def verify() -> None:
            assert await self.services.hasher.verify(PASSWORD, hashed)

        async def lookup() -> None:
            email = self.population.email(self.rng.randrange(self.size)).upper()
            async with self.services.sessionmaker() as session:
                assert await SQLAlchemyUserDatabase(session, User).get_by_email(email)

        logins, hashes = await timed(login, repeat), await timed(verify, repeat)
        results.add_samples("login `POST /auth/token`, bcrypt cost 4", self.size, logins)
        results.add_samples("one bcrypt verification (cost 4) alone", self.size, hashes)
        results.add(
            "**login minus the hash** (medians and p95s subtracted)",
            self.size,
            median(logins) - median(hashes),
            p95(logins) - p95(hashes),
        )
        lookups = await timed(lookup, repeat)
        results.add_samples("email lookup of a login alone (`get_by_email`)", self.size, lookups)
        me = await timed(lambda: self.client.get("/users/me", headers=self.headers), repeat)
        results.add_samples("`GET /users/me` (auth's fixed cost, for scale)", self.size, me)
        deep = await position(self.services, int(self.size * 0.9) - 1)
        await self.report_matches()
        for name, step in self.list_steps(deep).items():
            repeats = repeat if "`offset`" not in name else max(5, repeat // 5)
            results.add_samples(name, self.size, await timed(step, repeats))


# --- plans -----------------------------------------------------------------------------------


def plans_to_show(services: AppServices, size: int) -> dict[str, Select[Any]]:
    deep_at = BASE + (int(size * 0.9) - 1) * STEP
    after = UserCursor(deep_at, uuid.UUID(int=0))  # just before the row 90% down, whatever its id
    selective, broad = UserFilter(email_prefix=SELECTIVE), UserFilter(email_prefix=BROAD)
    return {
        "first page": page_query(UserFilter(), limit=51),
        "deep page by cursor": page_query(UserFilter(), limit=51, after=after),
        "deep page by offset": page_query(UserFilter(), limit=51, offset=int(size * 0.9)),
        "count (include_total=true)": count_query(UserFilter()),
        "is_active=false": page_query(UserFilter(is_active=False), limit=51),
        f"email_prefix={SELECTIVE}": page_query(selective, limit=51),
        f"email_prefix={BROAD}": page_query(broad, limit=51),
        f"email_prefix={BROAD}, deep cursor": page_query(broad, limit=51, after=after),
    }


def literal_sql(services: AppServices, statement: Select[Any]) -> str:
    dialect = services.engine.dialect
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def parameter_sql(services: AppServices, statement: Select[Any]) -> tuple[str, list[str]]:
    """The statement as the app sends it ($1, $2 ...), and its values as SQL literals."""
    compiled = statement.compile(dialect=services.engine.dialect)
    values = []
    for name in compiled.positiontup or []:
        value = compiled.params[name]
        values.append(str(value) if isinstance(value, int) else "'" + str(value) + "'")
    return str(compiled), values


async def explain(url: str, services: AppServices, size: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        print(f"\nPostgreSQL plans at {size:,} users (EXPLAIN (ANALYZE, BUFFERS); limit 51 is")
        print("the page of 50 plus the row that tells whether a next page exists):")
        for name, statement in plans_to_show(services, size).items():
            sql = literal_sql(services, statement)
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            print(f"\n-- {name}\n" + "\n".join(row[0] for row in rows))
        lookup = "SELECT id FROM \"user\" WHERE lower(email) = lower('USER0000042@example.com')"
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + lookup)
        print("\n-- login email lookup\n" + "\n".join(row[0] for row in rows))
        # A prepared statement may switch to a generic plan after five runs: one that cannot
        # see the pattern's prefix. What would it be?
        sql, values = parameter_sql(
            services, page_query(UserFilter(email_prefix=SELECTIVE), limit=51)
        )
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE search AS {sql}")
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE search({', '.join(values)})")
        print(f"\n-- email_prefix={SELECTIVE}, generic plan\n" + "\n".join(r[0] for r in rows))
        await plan_cache(conn, services)
    finally:
        await conn.close()


async def plan_cache(conn: asyncpg.Connection, services: AppServices) -> None:
    """Does PostgreSQL switch a prepared search to its generic plan? (What SET LOCAL
    plan_cache_mode = force_custom_plan in ``list_users`` prevents.)"""
    # Five prefixes matching 1% each, which with is_active=false cost the planner more than
    # the generic plan does; then a selective prefix and one matching nobody.
    mix = ["user001", "user002", "user001", "user002", "user001"] + [SELECTIVE, NOBODY] * 3
    query = page_query(UserFilter(email_prefix="x", is_active=False), limit=51)
    sql, _ = parameter_sql(services, query)
    print("\nOne prepared statement (as asyncpg and SQLAlchemy run it), is_active=false and")
    print(f"email_prefix = {', '.join(mix)} in turn; ms per call:")
    for mode in ("auto", "force_custom_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        statement = await conn.prepare(sql)
        times = []
        for prefix in mix:
            start = time.perf_counter()
            await statement.fetch(prefix + "%", 51)
            times.append((time.perf_counter() - start) * 1000)
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1",
            statement.get_name(),
        )
        print(f"  plan_cache_mode={mode:<17} " + " ".join(f"{t:.0f}" for t in times))
        print(f"  {'':34}generic plans: {plans[0]}, custom plans: {plans[1]}")


# --- the run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    sizes = sorted({min(args.small, args.users), args.users})
    population = Population(args.users)
    results = Results(sizes=sizes)
    with postgres_server() as url, tempfile.TemporaryDirectory() as folder:
        await asyncio.to_thread(migrations.upgrade, url)
        if args.drop_index:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            for name in args.drop_index:
                await conn.execute(f'DROP INDEX "{name}"')
            await conn.close()
        settings = Settings(
            _env_file=None, data_dir=Path(folder), database_url=url, migrate_on_start=False,
            ratelimit_enabled=False, bcrypt_rounds=4,
        )  # fmt: skip
        app = create_app(settings)
        services: AppServices = app.state.services
        await start_up(services)
        await make_admin(services)
        hashed = await services.hasher.hash(PASSWORD)
        transport = httpx.ASGITransport(app=app)
        seeded = 0
        try:
            async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as client:
                for size in sizes:
                    took = await seed(url, population, seeded, size, hashed)
                    print(f"seeded {size - seeded:,} users in {took:.1f} s (total {size:,})")
                    seeded = size
                    await Phase(client, services, population, size).run(
                        results, args.repeat, hashed
                    )
            print(f"\nusers at scale, PostgreSQL, in one run; {args.repeat} calls each after 3")
            print("warm-up (offset: a fifth as many), in-process, one client\n")
            print(results.table())
            if args.explain:
                await explain(url, services, sizes[-1])
        finally:
            await services.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--no-explain", dest="explain", action="store_false")
    parser.add_argument("--drop-index", action="append", default=[], metavar="NAME")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
