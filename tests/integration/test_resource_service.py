"""A second real service (uvicorn) protects its routes with authsvc.client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.integration.procs import Server, clean_env, run_cli, serve
from tests.servers import free_port, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
AUTH_ENV = {
    "AUTHSVC_BCRYPT_ROUNDS": "4",
    "AUTHSVC_KEY_ACTIVATION_DELAY_SECONDS": "0",
    # Users register and sign in at once; verifying the address is tests/api/test_register.py's.
    "AUTHSVC_REQUIRE_VERIFIED_EMAIL": "false",
}


@dataclass
class Stack:
    auth: Server
    orders: str
    folder: Path
    admin: dict[str, str]


def sign_in(base_url: str, email: str) -> str:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        response = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": PASSWORD},
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with serve(tmp_path, env=AUTH_ENV) as auth:
        created = run_cli(["create-admin", "--email", "root@example.com"], tmp_path, stdin=PASSWORD)
        assert created.returncode == 0, created.stderr
        admin = {"Authorization": f"Bearer {sign_in(auth.base_url, 'root@example.com')}"}
        with httpx.Client(base_url=auth.base_url, timeout=30) as client:
            registered = client.post("/clients", headers=admin, json={"name": "orders"}).json()
        port = free_port()
        log = (tmp_path / "orders.log").open("w")
        env = clean_env({
            "AUTHSVC_ISSUER": auth.base_url,
            "AUTHSVC_JWKS_MIN_REFETCH_SECONDS": "0",
            "AUTHSVC_CLIENT_ID": registered["id"],
            "AUTHSVC_CLIENT_SECRET": registered["client_secret"],
        })  # fmt: skip
        orders = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.resource_service:app",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/public", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)  # between attempts, whatever the answer (not only refusals)
            else:
                raise RuntimeError((tmp_path / "orders.log").read_text())
            yield Stack(auth, base, tmp_path, admin)
        finally:
            stop_process(orders)
            log.close()


def test_tokens_from_authsvc_open_the_other_service(stack: Stack) -> None:
    with httpx.Client(base_url=stack.auth.base_url, timeout=30) as client:
        client.post("/auth/register", json={"email": "o@example.com", "password": PASSWORD})
    token = sign_in(stack.auth.base_url, "o@example.com")
    with httpx.Client(base_url=stack.orders, timeout=30) as client:
        me = client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["roles"] == ["user"]

        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        refused = client.get("/me", headers={"Authorization": f"Bearer {tampered}"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert client.get("/me").status_code == 401

        denied = client.post("/refunds", headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 403
        assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]

    # An admin declares the other service's permission and gives it to every user.
    with httpx.Client(base_url=stack.auth.base_url, timeout=30) as client:
        declared = client.post("/permissions", headers=stack.admin, json={"name": "orders:refund"})
        assert declared.is_success
        assert client.put("/roles/user/permissions/orders:refund", headers=stack.admin).is_success
    token = sign_in(stack.auth.base_url, "o@example.com")
    with httpx.Client(base_url=stack.orders, timeout=30) as client:
        allowed = client.post("/refunds", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200, allowed.text


def test_introspection_mode_sees_a_logout_at_once(stack: Stack) -> None:
    with httpx.Client(base_url=stack.auth.base_url, timeout=30) as client:
        client.post("/auth/register", json={"email": "l@example.com", "password": PASSWORD})
    token = sign_in(stack.auth.base_url, "l@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.orders, timeout=30) as orders:
        assert orders.get("/strict", headers=headers).status_code == 200
        with httpx.Client(base_url=stack.auth.base_url, timeout=30) as auth:
            assert auth.post("/auth/logout", headers=headers).status_code == 204
        assert orders.get("/strict", headers=headers).status_code == 401
        # Offline verification cannot know before the token expires (documented).
        assert orders.get("/me", headers=headers).status_code == 200


def test_tokens_keep_working_across_a_key_rotation(stack: Stack) -> None:
    with httpx.Client(base_url=stack.auth.base_url, timeout=30) as client:
        client.post("/auth/register", json={"email": "r@example.com", "password": PASSWORD})
    old = sign_in(stack.auth.base_url, "r@example.com")
    with httpx.Client(base_url=stack.orders, timeout=30) as orders:
        assert orders.get("/me", headers={"Authorization": f"Bearer {old}"}).status_code == 200

    rotated = run_cli(["keys", "rotate"], stack.folder, env=AUTH_ENV)
    assert rotated.returncode == 0, rotated.stderr
    # Every worker re-reads the key directory within a few seconds.
    deadline = time.monotonic() + 10
    new = old
    while time.monotonic() < deadline:
        new = sign_in(stack.auth.base_url, "r@example.com")
        if jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]:
            break
        time.sleep(0.5)
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    with httpx.Client(base_url=stack.orders, timeout=30) as orders:
        for token in (old, new):
            response = orders.get("/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
