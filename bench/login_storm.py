"""Latency of a cheap route, idle and during a login storm, per password scheme, in one run.

Starts a real ``authsvc serve`` (uvicorn on 127.0.0.1, SQLite in a temporary folder, rate limits
off), registers one user, then:

1. idle:  one client calls ``GET /healthz`` back to back for ``--duration`` seconds;
2. storm: the same, while ``--concurrency`` tasks post logins to ``POST /auth/token`` as fast
   as they can (half with the right password, a quarter wrong, a quarter unknown emails, so
   verification, failure and the dummy verify all run).

It prints p50/p99/max of ``/healthz`` for both phases, logins per second, and the storm/idle
ratios, for each password scheme asked (``--scheme both``, the default: Argon2id with the
default OWASP parameters, then bcrypt at ``--rounds``, one server each, one after the other).
Password hashing runs in worker threads with a cap, so the event loop keeps serving ``/healthz``
during the storm; on a machine with few cores the ratio still grows because the hashing and the
load generator compete for the same CPUs. Compare ratios, not absolute numbers.

    python bench/login_storm.py [--scheme both|argon2|bcrypt] [--rounds 12] [--duration 10]
                                [--concurrency 16] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PASSWORD = "bench passphrase that is long"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    folder: Path, port: int, args: argparse.Namespace, scheme: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_DATA_DIR=str(folder / "data"),
        AUTHSVC_PASSWORD_SCHEME=scheme,
        AUTHSVC_BCRYPT_ROUNDS=str(args.rounds),
        AUTHSVC_RATELIMIT_ENABLED="false",
        AUTHSVC_REQUIRE_VERIFIED_EMAIL="false",  # the bench user signs in right after sign-up
        AUTHSVC_LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "authsvc.cli", "serve", "--port", str(port)]
    command += ["--workers", str(args.workers)]
    log = (folder / "server.log").open("wb")
    return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base_url: str, server: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit((folder / "server.log").read_text(errors="replace"))
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready within 60 s")


async def probe(base_url: str, duration: float) -> list[float]:
    """Sequential GET /healthz for ``duration`` seconds; latencies in milliseconds."""
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            start = time.perf_counter()
            response = await client.get("/healthz")
            samples.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return samples


async def storm(base_url: str, email: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            username, password = email, PASSWORD
            if n % 4 == 2:
                password = "wrong " + PASSWORD
            elif n % 4 == 3:
                username = f"nobody{n}@example.com"
            response = await client.post(
                "/auth/token",
                data={"grant_type": "password", "username": username, "password": password},
            )
            counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
    }


async def measure(base_url: str, args: argparse.Namespace) -> dict[str, object]:
    email = "bench@example.com"
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        created = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
        created.raise_for_status()

    idle = summary(await probe(base_url, args.duration))

    stop = asyncio.Event()
    counts: dict[str, int] = {}
    stormers = [
        asyncio.create_task(storm(base_url, email, stop, counts)) for _ in range(args.concurrency)
    ]
    await asyncio.sleep(1.0)  # let the storm build up before measuring
    started, before = time.perf_counter(), sum(counts.values())
    busy = summary(await probe(base_url, args.duration))
    logins_per_second = (sum(counts.values()) - before) / (time.perf_counter() - started)
    stop.set()
    await asyncio.gather(*stormers)
    return {
        "idle_ms": idle,
        "storm_ms": busy,
        "logins_per_second": logins_per_second,
        "login_statuses": counts,
        "ratio_p50": busy["p50"] / idle["p50"],
        "ratio_p99": busy["p99"] / idle["p99"],
    }


def report(result: dict[str, object], args: argparse.Namespace, scheme: str) -> None:
    idle = result["idle_ms"]
    busy = result["storm_ms"]
    assert isinstance(idle, dict) and isinstance(busy, dict)
    hashing = "Argon2id (m=19 MiB, t=2, p=1)" if scheme == "argon2" else f"bcrypt {args.rounds}"
    print(
        f"authsvc login storm: {hashing}, {args.workers} worker(s), "
        f"{args.concurrency} concurrent logins, {args.duration:g} s per phase, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'GET /healthz':<14}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, row in (("idle", idle), ("during storm", busy)):
        print(
            f"{name:<14}{row['n']:>10.0f}{row['p50']:>10.2f}{row['p99']:>10.2f}{row['max']:>10.2f}"
        )
    print(f"logins/s during storm: {result['logins_per_second']:.1f} {result['login_statuses']}")
    print(f"ratio storm/idle: p50 {result['ratio_p50']:.2f}x, p99 {result['ratio_p99']:.2f}x")


def run_one(args: argparse.Namespace, scheme: str) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    port = free_port()
    server = start_server(folder, port, args, scheme)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, server, folder)
        return asyncio.run(measure(base_url, args))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheme", choices=["both", "argon2", "bcrypt"], default="both")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent login clients")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    schemes = ["argon2", "bcrypt"] if args.scheme == "both" else [args.scheme]
    results = {scheme: run_one(args, scheme) for scheme in schemes}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for scheme, result in results.items():
        report(result, args, scheme)
        print()
    if len(results) == 2:
        argon2, bcrypt = results["argon2"], results["bcrypt"]
        rate = float(str(argon2["logins_per_second"])) / float(str(bcrypt["logins_per_second"]))
        print(f"Argon2id/bcrypt {args.rounds}: logins/s {rate:.2f}x")


if __name__ == "__main__":
    main()
