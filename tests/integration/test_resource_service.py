"""A second real service (uvicorn) protects its routes with authsvc.client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.procs import Server, clean_env, run_cli, serve
from tests.servers import free_port, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    with serve(tmp_path, env={"AUTHSVC_BCRYPT_ROUNDS": "4"}) as auth:
        port = free_port()
        log = (tmp_path / "orders.log").open("w")
        orders = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.resource_service:app",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=clean_env({"AUTHSVC_ISSUER": auth.base_url}),
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/public", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                raise RuntimeError((tmp_path / "orders.log").read_text())
            yield auth, base
        finally:
            stop_process(orders)
            log.close()


def test_tokens_from_authsvc_open_the_other_service(
    services: tuple[Server, str], tmp_path: Path
) -> None:
    auth, orders = services
    with httpx.Client(base_url=auth.base_url, timeout=30) as client:
        client.post("/auth/register", json={"email": "o@example.com", "password": PASSWORD})
        token = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "o@example.com", "password": PASSWORD},
        ).json()["access_token"]
    with httpx.Client(base_url=orders, timeout=30) as client:
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
    created = run_cli(["create-admin", "--email", "root@example.com"], tmp_path, stdin=PASSWORD)
    assert created.returncode == 0, created.stderr
    with httpx.Client(base_url=auth.base_url, timeout=30) as client:
        root = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "root@example.com", "password": PASSWORD},
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {root}"}
        assert client.post("/permissions", headers=admin, json={"name": "orders:refund"}).is_success
        assert client.put("/roles/user/permissions/orders:refund", headers=admin).is_success
        token = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "o@example.com", "password": PASSWORD},
        ).json()["access_token"]
    with httpx.Client(base_url=orders, timeout=30) as client:
        allowed = client.post("/refunds", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200, allowed.text
