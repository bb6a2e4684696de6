"""What a permission guard costs: a guarded route against an unguarded one, in one run.

Builds the real app (SQLite in a temporary folder, rate limits off), adds two routes that do
nothing, one open and one behind ``require_permissions("users:read")``, logs in a user who holds
the permission through the ``admin`` role, and calls both in-process (httpx ASGITransport, no
sockets), alternating, so both see the same machine conditions. The guard asks the caller
resolver (``services/callers.py``) once: it verifies the token's signature and claims, reads the
user and session rows in one query (active? session live? current ``authz_version``?), and the
guard checks the permission. ``GET /users/me`` (the same resolver, plus the per-caller rate-limit
dependency every API route has; limits are off here) is measured alongside.

    python bench/guard_overhead.py [--requests 2000] [--algorithm RS256|ES256]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import httpx
from fastapi import FastAPI

from authsvc.api.guards import require_permissions
from authsvc.authz.engine import Principal
from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.db.models import User
from authsvc.db.repositories import roles as repo
from authsvc.main import create_app, start_up
from authsvc.services.container import AppServices

PASSWORD = "bench passphrase that is long"


def add_bench_routes(app: FastAPI) -> None:
    @app.get("/bench/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/guarded")
    async def guarded_route(
        principal: Annotated[Principal, require_permissions("users:read")],
    ) -> dict[str, bool]:
        return {"ok": True}


async def make_admin(services: AppServices) -> None:
    async with services.sessionmaker() as session:
        user = User(
            email="bench@example.com",
            hashed_password=await services.hasher.hash(PASSWORD),
            is_active=True,
            is_verified=True,
            is_superuser=False,
        )
        session.add(user)
        await session.flush()
        admin = await repo.get_role(session, "admin")
        assert admin is not None
        await repo.assign(session, user.id, admin.id)
        await session.commit()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def run(requests: int, algorithm: Literal["RS256", "ES256"]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,
            data_dir=Path(folder),
            signing_algorithm=algorithm,
            ratelimit_enabled=False,
            bcrypt_rounds=4,
        )
        await asyncio.to_thread(migrations.upgrade, settings.resolved_database_url)
        app = create_app(settings)
        add_bench_routes(app)
        services: AppServices = app.state.services
        await start_up(services)
        await make_admin(services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            token = (
                await client.post(
                    "/auth/token",
                    data={
                        "grant_type": "password",
                        "username": "bench@example.com",
                        "password": PASSWORD,
                    },
                )  # fmt: skip
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            paths = {"open": "/bench/open", "guarded": "/bench/guarded", "me": "/users/me"}
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for i in range(requests + 100):
                for name, path in paths.items():
                    start = time.perf_counter()
                    response = await client.get(path, headers=headers)
                    elapsed = (time.perf_counter() - start) * 1000
                    assert response.status_code == 200, response.text
                    if i >= 100:  # warm-up
                        samples[name].append(elapsed)
        await services.engine.dispose()

    print(f"guard overhead: {requests} requests per route, interleaved, {algorithm}, in-process")
    print(f"{'route':<22}{'p50 ms':>10}{'p99 ms':>10}")
    for name, path in paths.items():
        row = samples[name]
        print(f"{path:<22}{statistics.median(row):>10.3f}{percentile(row, 0.99):>10.3f}")
    ratio_p50 = statistics.median(samples["guarded"]) / statistics.median(samples["open"])
    ratio_p99 = percentile(samples["guarded"], 0.99) / percentile(samples["open"], 0.99)
    extra = statistics.median(samples["guarded"]) - statistics.median(samples["open"])
    print(f"ratio guarded/open: p50 {ratio_p50:.2f}x, p99 {ratio_p99:.2f}x (+{extra:.3f} ms p50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--algorithm", choices=["RS256", "ES256"], default="RS256")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.algorithm))


if __name__ == "__main__":
    main()
