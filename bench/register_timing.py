"""How long ``POST /auth/register`` takes for a new address and for a taken one, side by side.

With ``AUTHSVC_REQUIRE_VERIFIED_EMAIL`` on, both answer the same 202 after the same password
work; what is left to tell them apart is time. The bench builds the real app in-process (httpx
ASGITransport; SQLite in a temporary folder, or ``--database-url`` for PostgreSQL; rate limits
off; the default Argon2id unless ``--hash cheap``), registers ``--accounts`` addresses once, then
sends ``--pairs`` pairs of registrations one at a time, alternating which of the two goes first:
a new address and one of the taken ones. It prints the median and the 90th percentile of each
and the taken/new ratio of the medians. Tests never assert timings; this is where they are
measured.

    python bench/register_timing.py [--pairs 60] [--accounts 20] [--hash default|cheap]
                                    [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.main import create_app, start_up
from authsvc.services.container import AppServices

PASSWORD = "bench passphrase that is long"


async def timed(client: httpx.AsyncClient, email: str) -> float:
    began = time.perf_counter()
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    elapsed = time.perf_counter() - began
    assert response.status_code == 202, response.text
    return elapsed * 1000


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"{name:<6} median {statistics.median(values):7.2f} ms   p90 {p90:7.2f} ms"


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
        run_id = uuid.uuid4().hex[:8]  # a database given by URL may hold an earlier run's rows
        transport = httpx.ASGITransport(app=app, client=("198.51.100.8", 40000))
        new: list[float] = []
        taken: list[float] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            accounts = [f"taken{n}.{run_id}@example.com" for n in range(args.accounts)]
            for email in accounts:
                await timed(client, email)
            for n in range(3):  # warm-up of both paths
                await timed(client, f"warm{n}.{run_id}@example.com")
                await timed(client, accounts[n % len(accounts)])
            for n in range(args.pairs):
                fresh = f"new{n}.{run_id}@example.com"
                again = accounts[n % len(accounts)]
                if n % 2:
                    taken.append(await timed(client, again))
                    new.append(await timed(client, fresh))
                else:
                    new.append(await timed(client, fresh))
                    taken.append(await timed(client, again))
        await services.notifier.drain()
        await services.engine.dispose()
    engine = "postgresql" if args.database_url else "sqlite"
    print(f"register timing: {args.pairs} pairs, {engine}, Argon2id {args.hash}")
    print(summary("new", new))
    print(summary("taken", taken))
    print(f"taken/new (medians): {statistics.median(taken) / statistics.median(new):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--hash", choices=("default", "cheap"), default="default")
    parser.add_argument("--database-url")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
