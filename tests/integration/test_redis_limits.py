"""Rate limits shared by several uvicorn workers through a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authsvc.errors import RateLimited
from authsvc.ratelimit.limiter import RateLimiter, Rule
from tests.conftest import PASSWORD, MakeUser
from tests.integration.procs import serve
from tests.servers import redis_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def test_two_limiters_share_one_budget(redis_url: str) -> None:
    """Two limiter objects stand for two processes: the budget is the sum, not per object."""
    rule = Rule.parse("login_username", "3/minute")
    first = RateLimiter(storage_uri=redis_url)
    second = RateLimiter(storage_uri=redis_url)
    first.reset()
    first.hit(rule, "shared@example.com")
    second.hit(rule, "shared@example.com")
    first.hit(rule, "shared@example.com")
    with pytest.raises(RateLimited) as caught:
        second.hit(rule, "shared@example.com")
    assert caught.value.data["retry_after"] >= 1
    second.hit(rule, "someone-else@example.com")


def test_login_limit_holds_across_two_workers(tmp_path: Path, redis_url: str) -> None:
    env = {
        "AUTHSVC_RATELIMIT_STORAGE_URI": redis_url,
        "AUTHSVC_RATELIMIT_LOGIN_USERNAME": "3/minute",
        "AUTHSVC_BCRYPT_ROUNDS": "4",
    }
    RateLimiter(storage_uri=redis_url).reset()
    with serve(tmp_path, workers=2, env=env) as server:
        statuses = []
        for _ in range(8):
            # A new connection per attempt, so attempts land on both workers.
            with httpx.Client(base_url=server.base_url, timeout=30) as client:
                response = client.post(
                    "/auth/token",
                    data={
                        "grant_type": "password",
                        "username": "target@example.com",
                        "password": "wrong password!",
                    },
                )
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert response.json()["detail"]["code"] == "RATE_LIMITED"
                    assert int(response.headers["retry-after"]) >= 1
        assert statuses == [400, 400, 400, 429, 429, 429, 429, 429]


class TestTrustedDeviceOnRedis:
    """The per-username rule counts untrusted attempts only, on the shared storage as well."""

    @pytest.fixture
    def settings_overrides(self, redis_url: str) -> dict[str, Any]:
        return {"ratelimit_storage_uri": redis_url, "ratelimit_login_username": "2/minute"}

    async def test_the_owners_device_passes_a_spent_username_budget(
        self, client: httpx.AsyncClient, make_user: MakeUser
    ) -> None:
        await make_user("owner@example.com")

        def form(password: str, **extra: str) -> dict[str, str]:
            return {"grant_type": "password", "username": "owner@example.com",
                    "password": password, **extra}  # fmt: skip

        first = await client.post("/auth/token", data=form(PASSWORD))
        assert first.status_code == 200, first.text
        device = first.json()["device_token"]
        assert (await client.post("/auth/token", data=form("wrong password!"))).status_code == 400
        limited = await client.post("/auth/token", data=form(PASSWORD))
        assert limited.status_code == 429
        assert limited.json()["detail"]["code"] == "RATE_LIMITED"
        trusted = await client.post("/auth/token", data=form(PASSWORD, device_token=device))
        assert trusted.status_code == 200, trusted.text
