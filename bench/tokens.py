"""Token verification and refresh throughput, measured side by side in one run.

1. ``TokenVerifier.verify`` (keys cached) against the floor: a raw RSA-PKCS1v15-SHA256 signature
   check of the same token with ``cryptography``, nothing else. The ratio is what JOSE parsing
   and claim checks cost on top of the signature.
2. The refresh grant (``POST /auth/token`` with ``grant_type=refresh_token``) in-process through
   httpx's ASGITransport on SQLite, one client, so on one core: refreshes per second, with the
   password grant (bcrypt cost 4 here) for scale.

    python bench/tokens.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authsvc.client import TokenVerifier
from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.main import create_app, start_up
from authsvc.services.container import AppServices

PASSWORD = "bench passphrase that is long"
ISSUER = "http://127.0.0.1:8000"


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def rate(seconds: float, step: object) -> float:
    """Calls per second of the coroutine function ``step`` over ``seconds``."""
    assert callable(step)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await step()
        count += 1
    return count / (time.perf_counter() - start)


async def run(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,
            data_dir=Path(folder),
            ratelimit_enabled=False,
            bcrypt_rounds=4,
            require_verified_email=False,  # the bench user signs in right after sign-up
        )
        await asyncio.to_thread(migrations.upgrade, settings.resolved_database_url)
        app = create_app(settings)
        services: AppServices = app.state.services
        await start_up(services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            await client.post(
                "/auth/register", json={"email": "b@example.com", "password": PASSWORD}
            )
            login = {"grant_type": "password", "username": "b@example.com", "password": PASSWORD}
            tokens = (await client.post("/auth/token", data=login)).json()
            token = tokens["access_token"]

            verifier = TokenVerifier(issuer=ISSUER, audience="authsvc", http=client)
            await verifier.verify(token)  # fetch the keys once

            header, payload, signature = token.split(".")
            numbers = services.keys.active.public_jwk
            key = rsa.RSAPublicNumbers(
                int.from_bytes(b64decode(numbers["e"]), "big"),
                int.from_bytes(b64decode(numbers["n"]), "big"),
            ).public_key()
            signed, raw_signature = f"{header}.{payload}".encode(), b64decode(signature)

            async def raw() -> None:
                key.verify(raw_signature, signed, padding.PKCS1v15(), hashes.SHA256())

            async def verify() -> None:
                await verifier.verify(token)

            state = {"refresh": tokens["refresh_token"]}

            async def refresh() -> None:
                response = await client.post(
                    "/auth/token",
                    data={"grant_type": "refresh_token", "refresh_token": state["refresh"]},
                )
                state["refresh"] = response.json()["refresh_token"]

            async def password() -> None:
                (await client.post("/auth/token", data=login)).raise_for_status()

            floor = await rate(seconds, raw)
            verified = await rate(seconds, verify)
            refreshed = await rate(seconds, refresh)
            signed_in = await rate(seconds, password)
        await services.engine.dispose()

    print(f"token benchmarks, {seconds:g} s each, RS256, in one run")
    print(f"raw RSA signature check (floor)     {floor:10.0f} /s")
    print(
        f"TokenVerifier.verify (keys cached)  {verified:10.0f} /s   {verified / floor:.2f}x floor"
    )
    print(f"refresh grant, one core, SQLite     {refreshed:10.1f} /s")
    print(f"password grant, bcrypt cost 4       {signed_in:10.1f} /s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(run(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
