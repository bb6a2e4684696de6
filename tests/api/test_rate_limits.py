"""slowapi-backed limits on login, register, forgot-password and every other route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import PASSWORD, Login, MakeUser


def form(username: str, password: str = "wrong password!") -> dict[str, str]:
    return {"grant_type": "password", "username": username, "password": password}


def assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["detail"]["code"] == "RATE_LIMITED"
    assert int(response.headers["retry-after"]) >= 1


def client_at(app: FastAPI, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class TestLoginLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"ratelimit_login_ip": "5/minute", "ratelimit_login_username": "3/minute"}

    async def test_per_username_across_ips(self, app: FastAPI, make_user: MakeUser) -> None:
        await make_user("victim@example.com")
        for i in range(3):
            async with client_at(app, f"198.51.100.{i}") as client:
                response = await client.post("/auth/token", data=form("victim@example.com"))
                assert response.status_code == 400
        async with client_at(app, "198.51.100.99") as client:
            # Even the right password is refused once the account's budget is spent.
            blocked = await client.post("/auth/token", data=form("Victim@Example.com", PASSWORD))
        assert_429(blocked)
        async with client_at(app, "198.51.100.99") as client:
            other = await client.post("/auth/token", data=form("someone@example.com"))
        assert other.status_code == 400

    async def test_a_trusted_device_is_not_held_to_the_username_rule(
        self, app: FastAPI, make_user: MakeUser
    ) -> None:
        """The per-username rule counts untrusted attempts only: someone else's guesses never
        refuse the owner's device (its device token, from an earlier sign-in)."""
        await make_user("owner@example.com")
        async with client_at(app, "198.51.100.60") as owner:
            first = await owner.post("/auth/token", data=form("owner@example.com", PASSWORD))
            device = first.json()["device_token"]
        for i in range(3):
            async with client_at(app, f"198.51.100.{70 + i}") as other:
                await other.post("/auth/token", data=form("owner@example.com"))
        async with client_at(app, "198.51.100.60") as owner:
            assert_429(await owner.post("/auth/token", data=form("owner@example.com", PASSWORD)))
            trusted = form("owner@example.com", PASSWORD) | {"device_token": device}
            for _ in range(3):
                response = await owner.post("/auth/token", data=trusted)
                assert response.status_code == 200, response.text
                trusted["device_token"] = response.json()["device_token"]

    async def test_per_ip_across_usernames(self, client: httpx.AsyncClient) -> None:
        for i in range(5):
            response = await client.post("/auth/token", data=form(f"user{i}@example.com"))
            assert response.status_code == 400
        assert_429(await client.post("/auth/token", data=form("fresh@example.com")))

    async def test_forwarded_for_is_ignored_from_untrusted_peers(
        self, client: httpx.AsyncClient
    ) -> None:
        for i in range(5):
            response = await client.post(
                "/auth/token",
                data=form(f"user{i}@example.com"),
                headers={"X-Forwarded-For": f"192.0.2.{i}"},
            )
            assert response.status_code == 400
        spoofed = await client.post(
            "/auth/token",
            data=form("fresh@example.com"),
            headers={"X-Forwarded-For": "192.0.2.200"},
        )
        assert_429(spoofed)


class TestTrustedProxy:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"ratelimit_login_ip": "2/minute", "trusted_proxies": "10.0.0.0/8"}

    async def test_client_ip_comes_from_the_trusted_proxy_header(self, app: FastAPI) -> None:
        async with client_at(app, "10.1.2.3") as proxy:
            for _ in range(2):
                response = await proxy.post(
                    "/auth/token",
                    data=form("a@example.com"),
                    headers={"X-Forwarded-For": "6.6.6.6, 192.0.2.7"},
                )
                assert response.status_code == 400
            assert_429(
                await proxy.post(
                    "/auth/token",
                    data=form("b@example.com"),
                    headers={"X-Forwarded-For": "192.0.2.7"},
                )
            )
            # Another client behind the same proxy has its own budget.
            other = await proxy.post(
                "/auth/token", data=form("c@example.com"), headers={"X-Forwarded-For": "192.0.2.8"}
            )
            assert other.status_code == 400


class TestRegisterAndResetLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"ratelimit_register_ip": "2/hour", "ratelimit_password_reset_ip": "2/hour"}

    async def test_register_per_ip(self, client: httpx.AsyncClient) -> None:
        for i in range(2):
            response = await client.post(
                "/auth/register", json={"email": f"r{i}@example.com", "password": PASSWORD}
            )
            assert response.status_code == 202
        assert_429(
            await client.post(
                "/auth/register", json={"email": "r9@example.com", "password": PASSWORD}
            )
        )

    async def test_forgot_password_per_ip(self, client: httpx.AsyncClient) -> None:
        for _ in range(2):
            response = await client.post("/auth/forgot-password", json={"email": "x@example.com"})
            assert response.status_code == 202
        assert_429(await client.post("/auth/forgot-password", json={"email": "y@example.com"}))


class TestGeneralLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"ratelimit_authenticated": "3/minute", "ratelimit_anonymous": "4/minute"}

    async def test_authenticated_routes_per_user(
        self, app: FastAPI, make_user: MakeUser, login: Login
    ) -> None:
        await make_user("busy@example.com")
        await make_user("calm@example.com")
        busy = await login("busy@example.com")
        calm = await login("calm@example.com")
        # Two logins already spent two of this IP's anonymous budget of four.
        for i in range(3):
            # A different address each time: the budget follows the user, not the socket.
            async with client_at(app, f"198.51.100.{i}") as client:
                assert (await client.get("/users/me", headers=busy)).status_code == 200
        async with client_at(app, "198.51.100.50") as client:
            assert_429(await client.get("/users/me", headers=busy))
            assert (await client.get("/users/me", headers=calm)).status_code == 200

    async def test_anonymous_routes_per_ip(self, app: FastAPI) -> None:
        async with client_at(app, "198.51.100.1") as client:
            for _ in range(4):
                assert (await client.get("/users/me")).status_code == 401
            assert_429(await client.get("/users/me"))
        async with client_at(app, "198.51.100.2") as other:
            assert (await other.get("/users/me")).status_code == 401

    async def test_probes_are_not_limited(self, client: httpx.AsyncClient) -> None:
        for _ in range(10):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200

    async def test_every_route_but_the_probes_is_limited(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        schema = (await client.get("/openapi.json")).json()
        operations = [
            (
                method.upper(),
                path.replace("{user_id}", "00000000-0000-0000-0000-000000000000")
                .replace("{role}", "user")
                .replace("{permission}", "users:read")
                .replace("{session_id}", "00000000-0000-0000-0000-000000000000")
                .replace("{client_id}", "svc-none"),
            )
            for path, item in schema["paths"].items()
            for method in item
            if path not in ("/healthz", "/readyz", "/auth/introspect", "/metrics")
            and not path.startswith("/.well-known/")  # tests/api/test_wellknown_limits.py
        ]
        assert len(operations) == 55
        for number, (method, path) in enumerate(operations):
            async with client_at(app, f"192.0.2.{number}") as fresh:
                answers = [await fresh.request(method, path) for _ in range(5)]
            assert [a.status_code for a in answers[:4]].count(429) == 0, (method, path)
            assert_429(answers[4])

    async def test_invalid_token_counts_as_anonymous(self, app: FastAPI) -> None:
        headers = {"Authorization": "Bearer forged.token.value"}
        async with client_at(app, "198.51.100.3") as client:
            for _ in range(4):
                assert (await client.get("/users/me", headers=headers)).status_code == 401
            assert_429(await client.get("/users/me", headers=headers))


class TestDisabled:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"ratelimit_enabled": False, "ratelimit_login_ip": "1/minute"}

    async def test_no_limits_when_disabled(self, client: httpx.AsyncClient) -> None:
        for _ in range(3):
            response = await client.post("/auth/token", data=form("a@example.com"))
            assert response.status_code == 400
