"""The JWKS and the discovery document are not under the anonymous per-IP limit: many
resource servers behind one NAT address fetch them. They say how long to cache them."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

ANONYMOUS_BUDGET = 3
WELL_KNOWN = ("/.well-known/jwks.json", "/.well-known/openid-configuration")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"ratelimit_anonymous": f"{ANONYMOUS_BUDGET}/minute"}


def behind_nat(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.77", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_well_known_documents_are_exempt_from_the_anonymous_limit(app: FastAPI) -> None:
    async with behind_nat(app) as client:
        for path in WELL_KNOWN:
            answers = [await client.get(path) for _ in range(ANONYMOUS_BUDGET * 4)]
            assert [a.status_code for a in answers] == [200] * len(answers), path
        # The same address is limited on an ordinary anonymous route ...
        limited = [await client.get("/users/me") for _ in range(ANONYMOUS_BUDGET + 1)]
        assert [a.status_code for a in limited[:ANONYMOUS_BUDGET]] == [401] * ANONYMOUS_BUDGET
        assert limited[-1].status_code == 429
        assert limited[-1].json()["detail"]["code"] == "RATE_LIMITED"
        # ... and the documents keep answering after that budget is spent.
        for path in WELL_KNOWN:
            assert (await client.get(path)).status_code == 200, path


async def test_well_known_documents_are_cacheable(client: httpx.AsyncClient) -> None:
    for path in WELL_KNOWN:
        response = await client.get(path)
        assert response.status_code == 200
        cache = response.headers["cache-control"]
        assert "public" in cache and "no-store" not in cache, cache
        match = re.search(r"max-age=(\d+)", cache)
        assert match and int(match.group(1)) >= 60, cache
