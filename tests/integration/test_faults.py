"""Outages: PostgreSQL or Redis stops under a running app, and comes back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.errors import ServiceUnavailable
from authsvc.main import create_app, start_up
from authsvc.ratelimit.limiter import RateLimiter, Rule
from tests.polling import eventually
from tests.servers import PostgresInstance, free_port, postgres_instance, redis_server

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
def pg() -> Iterator[PostgresInstance]:
    with postgres_instance() as instance:
        migrations.upgrade(instance.url)
        yield instance


@pytest.fixture
async def client(pg: PostgresInstance, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        database_url=pg.url,
        migrate_on_start=False,
        bcrypt_rounds=4,
        token_secret=SecretStr("t" * 40),
        require_verified_email=False,  # registered accounts sign straight in here
    )
    app = create_app(settings)
    await start_up(app.state.services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http
    await app.state.services.engine.dispose()


def form(email: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": PASSWORD}


async def test_database_outage_is_503_and_recovers(
    client: httpx.AsyncClient, pg: PostgresInstance, caplog: pytest.LogCaptureFixture
) -> None:
    emails = [f"kept{i}@example.com" for i in range(3)]
    for email in emails:
        created = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 201
    tokens = (await client.post("/auth/token", data=form(emails[0]))).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    pg.stop()
    with caplog.at_level(logging.WARNING):
        for method, path, kwargs in [
            (
                "POST",
                "/auth/register",
                {"json": {"email": "new@example.com", "password": PASSWORD}},
            ),
            ("POST", "/auth/token", {"data": form(emails[1])}),
            ("GET", "/users/me", {"headers": headers}),
        ]:
            response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 503, (path, response.text)
            assert response.json()["detail"]["code"] == "DATABASE_UNAVAILABLE"
            assert response.headers["retry-after"] == "5"
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]["code"] == "DATABASE_UNAVAILABLE"
        # Offline parts keep working.
        assert (await client.get("/.well-known/jwks.json")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    assert any("database unreachable" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    pg.start()  # same data, same port: the service recovers by itself

    async def ready_again() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(ready_again, "/readyz 200 once PostgreSQL is back")
    assert (await client.get("/users/me", headers=headers)).status_code == 200
    for email in emails:  # everything acknowledged before the outage is still there
        assert (await client.post("/auth/token", data=form(email))).status_code == 200


async def test_redis_outage_fails_closed_or_open_and_recovers(tmp_path: Path) -> None:
    rule = Rule.parse("login_ip", "100/minute")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    closed = RateLimiter(storage_uri=dead)
    with pytest.raises(ServiceUnavailable) as refused:
        closed.hit(rule, "1.2.3.4")
    assert refused.value.code == "RATE_LIMIT_UNAVAILABLE"
    RateLimiter(storage_uri=dead, fail_open=True).hit(rule, "1.2.3.4")  # allowed, logged

    with redis_server() as url:
        limiter = RateLimiter(storage_uri=url)
        limiter.hit(rule, "1.2.3.4")
    # Redis is gone now: the same limiter refuses...
    with pytest.raises(ServiceUnavailable):
        limiter.hit(rule, "1.2.3.4")
