"""``authsvc serve --workers 2`` on PostgreSQL and Redis: what one worker changes, requests
served by the other see.

Each httpx client keeps one connection open, so all its requests go to the worker that accepted
it; ``GET /authz/policies`` says which process answered, so the test opens connections until it
holds one to each worker, and checks before every observation that it still does.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.integration.procs import run_cli, serve
from tests.servers import postgres_server, redis_server

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ADMIN_PASSWORD = "a long admin passphrase"
USER_PASSWORD = "a long user passphrase"
Headers = dict[str, str]


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[str, str]]:
    with postgres_server() as database_url, redis_server() as redis_url:
        yield database_url, redis_url


class Pinned:
    """A client whose connection stays with one worker."""

    def __init__(self, base_url: str, admin: Headers) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.admin = admin
        self.pid = self.worker()

    def worker(self) -> int:
        response = self.http.get("/authz/policies", headers=self.admin)
        assert response.status_code == 200, response.text
        return int(response.json()["worker_pid"])

    def still_pinned(self) -> Pinned:
        assert self.worker() == self.pid, "the connection moved to another worker"
        return self

    def token(self, email: str, password: str) -> tuple[Headers, dict[str, str]]:
        response = self.http.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": password},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return {"Authorization": f"Bearer {body['access_token']}"}, body


def _pin_both(base_url: str, admin: Headers) -> tuple[Pinned, Pinned]:
    first = Pinned(base_url, admin)
    for _ in range(200):
        other = Pinned(base_url, admin)
        if other.pid != first.pid:
            return first, other
        other.http.close()
    raise AssertionError("never reached the second worker")


def _until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_changes_through_one_worker_are_seen_by_the_other(
    tmp_path: Path, backends: tuple[str, str]
) -> None:
    database_url, redis_url = backends
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    env = {
        "AUTHSVC_DATABASE_URL": database_url,
        "AUTHSVC_RATELIMIT_STORAGE_URI": redis_url,
        "AUTHSVC_RATELIMIT_LOGIN_USERNAME": "3/minute",
        "AUTHSVC_BCRYPT_ROUNDS": "4",
        "AUTHSVC_KEY_ACTIVATION_DELAY_SECONDS": "0",
        "AUTHSVC_POLICIES_DIR": str(policies),
        # The user registers and signs in at once (201 with its id): verification is not
        # what this test is about.
        "AUTHSVC_REQUIRE_VERIFIED_EMAIL": "false",
    }
    assert run_cli(["migrate"], tmp_path, env).returncode == 0
    created = run_cli(
        ["create-admin", "--email", "root@example.com"], tmp_path, env, stdin=ADMIN_PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stderr

    with serve(tmp_path, workers=2, env=env) as server:
        with httpx.Client(base_url=server.base_url) as setup:
            admin = {
                "Authorization": "Bearer "
                + setup.post(
                    "/auth/token",
                    data={"grant_type": "password", "username": "root@example.com",
                          "password": ADMIN_PASSWORD},
                ).json()["access_token"]
            }  # fmt: skip
            registered = setup.post(
                "/auth/register", json={"email": "u@example.com", "password": USER_PASSWORD}
            )
            assert registered.status_code == 201, registered.text
            user_id = registered.json()["id"]
        a, b = _pin_both(server.base_url, admin)

        # Role change through A: the user's older token stops passing on B at once.
        user, _ = b.token("u@example.com", USER_PASSWORD)
        assert b.http.get("/audit", headers=user).status_code == 403
        role = a.http.post(
            "/roles", headers=admin, json={"name": "auditor", "permissions": ["audit:read"]}
        )
        assert role.status_code == 201, role.text
        assert a.http.put(f"/users/{user_id}/roles/auditor", headers=admin).status_code == 204
        stale = b.still_pinned().http.get("/audit", headers=user)
        assert stale.status_code == 401 and stale.json()["detail"]["code"] == "TOKEN_STALE"
        fresh, _ = b.token("u@example.com", USER_PASSWORD)
        assert b.http.get("/audit", headers=fresh).status_code == 200

        # Session revocation through A: the access token and the refresh token die on B.
        signed_in, tokens = a.still_pinned().token("u@example.com", USER_PASSWORD)
        assert a.http.post("/auth/logout", headers=signed_in).status_code == 204
        revoked = b.still_pinned().http.get("/audit", headers=signed_in)
        assert revoked.status_code == 401 and revoked.json()["detail"]["code"] == "TOKEN_REVOKED"
        refreshed = b.http.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        assert refreshed.status_code == 400, refreshed.text
        assert refreshed.json()["error"] == "invalid_grant", refreshed.text

        # Policy reload through A: B runs the new set within about a second.
        before = b.still_pinned().http.get("/authz/policies", headers=admin).json()["digest"]
        (policies / "extra.cedar").write_text(
            '@id("extra.noop")\nforbid (principal, action == Action::"audit:read", resource)\n'
            'when { principal.email == "nobody@example.com" };\n'
        )
        reloaded = a.still_pinned().http.post("/authz/policies/reload", headers=admin)
        assert reloaded.status_code == 200, reloaded.text
        after = reloaded.json()["digest"]
        assert after != before
        _until(
            lambda: (
                b.still_pinned().http.get("/authz/policies", headers=admin).json()["digest"]
                == after
            ),
            "worker B on the reloaded policies",
        )

        # Key rotation through A: B signs with the new key and publishes it.
        rotated = a.still_pinned().http.post("/keys/rotate", headers=admin)
        assert rotated.status_code == 201, rotated.text
        kid = rotated.json()["kid"]

        def b_publishes_it() -> bool:
            jwks = b.still_pinned().http.get("/.well-known/jwks.json").json()
            return kid in {key["kid"] for key in jwks["keys"]}

        _until(b_publishes_it, "worker B publishing the rotated key")
        # (A login per poll would run into the 3/minute login limit set above.)
        headers, _ = b.still_pinned().token("root@example.com", ADMIN_PASSWORD)
        assert jwt.get_unverified_header(headers["Authorization"][7:])["kid"] == kid

        # The login limit (3/minute per account) holds across both workers, exactly.
        statuses = []
        for client in (a, b, a, b, a):
            response = client.still_pinned().http.post(
                "/auth/token",
                data={"grant_type": "password", "username": "target@example.com",
                      "password": "wrong password!"},
            )  # fmt: skip
            statuses.append(response.status_code)
        assert statuses == [400, 400, 400, 429, 429]
        a.http.close()
        b.http.close()
    assert ADMIN_PASSWORD not in server.log() and USER_PASSWORD not in server.log()
