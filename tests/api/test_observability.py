"""Request ids, JSON logs and Prometheus metrics."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authsvc.observability import JsonFormatter, request_id_var
from tests.conftest import PASSWORD, MakeUser


async def test_request_ids_are_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    forged = await client.get("/healthz", headers={"X-Request-ID": "bad id\\n{json}"})
    assert forged.headers["x-request-id"] != "bad id\\n{json}"
    too_big = await client.post("/auth/register", content=b"x" * 100_000)
    assert too_big.status_code == 413 and "x-request-id" in too_big.headers


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("authsvc", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    token = request_id_var.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hello you" and entry["request_id"] == "req-1"
    assert entry["level"] == "INFO" and entry["logger"] == "authsvc"


async def test_metrics_are_off_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["detail"]["code"] == "METRICS_DISABLED"


class TestMetrics:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"metrics_token": "scrape-me-please", "ratelimit_login_username": "2/minute"}

    async def scrape(self, client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
        """Every sample the scrape endpoint shows, by name and labels."""
        response = await client.get(
            "/metrics", headers={"Authorization": "Bearer scrape-me-please"}
        )
        assert response.status_code == 200
        assert PASSWORD not in response.text
        return {
            (sample.name, json.dumps(sample.labels, sort_keys=True)): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    async def test_counters(self, client: httpx.AsyncClient, make_user: MakeUser) -> None:
        # The app (and so its registry) serves other tests with these settings too: counts
        # are compared with a scrape before, never read as absolute values.
        before = await self.scrape(client)
        await make_user("m@example.com")
        form = {"grant_type": "password", "username": "m@example.com", "password": PASSWORD}
        assert (await client.post("/auth/token", data=form)).status_code == 200
        wrong = {**form, "password": "nope nope nope"}
        assert (await client.post("/auth/token", data=wrong)).status_code == 400
        assert (await client.post("/auth/token", data=wrong)).status_code == 429

        assert (await client.get("/metrics")).status_code == 401
        bad = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        after = await self.scrape(client)

        def added(name: str, **labels: str) -> float:
            key = (name, json.dumps(labels, sort_keys=True))
            return after[key] - before.get(key, 0.0)

        assert added("authsvc_logins_total", outcome="success") == 1
        assert added("authsvc_logins_total", outcome="failure") == 1
        assert added("authsvc_tokens_issued_total", grant="password") == 1
        assert added("authsvc_rate_limit_rejections_total", rule="login-username") == 1
        assert (
            added("authsvc_http_requests_total", method="POST", route="/auth/token", status="429")
            == 1
        )
        assert any(name == "authsvc_http_request_duration_seconds_bucket" for name, _ in after)

    async def test_route_labels_are_templates(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str], make_user: MakeUser
    ) -> None:
        user = await make_user("label@example.com")
        assert (await client.get(f"/users/{user.id}/roles", headers=admin_headers)).is_success
        await client.get("/no/such/path/12345")
        text = (
            await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
        ).text
        assert 'route="/users/{user_id}/roles",status="200"' in text
        assert 'route="unmatched",status="404"' in text
        assert str(user.id) not in text
