"""The real service: ``authsvc serve`` from an empty folder, over real sockets."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.integration.procs import Server, serve

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


def mailed_verify_token(server: Server, email: str, timeout: float = 30.0) -> str:
    """The verification token the console notifier printed to the server's log (the outbox
    sends it in the background: poll until it is there)."""
    subject = re.escape(f"--- mail to {email}: Verify your email address ---")
    pattern = subject + r"\n.*?:\n\n(\S+)\n"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.log(), re.S)
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no verification mail to {email} in the log:\n{server.log()}")


def register_and_login(server: Server, email: str) -> str:
    """Register, verify through the mailed token (as a user would), sign in."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        created = client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 202, created.text
        token = mailed_verify_token(server, email)
        verified = client.post("/auth/verify", json={"token": token})
        assert verified.status_code == 200, verified.text
        response = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": PASSWORD},
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def test_login_and_verify_with_pyjwt_using_only_the_jwks(tmp_path: Path) -> None:
    """A second party (PyJWT, not python-jose) validates our token from the JWKS document."""
    with serve(tmp_path) as server:
        token = register_and_login(server, "e2e@example.com")
        jwks_client = jwt.PyJWKClient(f"{server.base_url}/.well-known/jwks.json")
        signing_key = jwks_client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=["RS256"],
            audience="authsvc",
            issuer=server.base_url,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )
        assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
        with httpx.Client(base_url=server.base_url) as client:
            me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["id"] == claims["sub"]

    # The embedded default lives in ./authsvc-data of the folder it was started in.
    data = tmp_path / "authsvc-data"
    assert data.stat().st_mode & 0o077 == 0
    assert (data / "authsvc.db").is_file()
    (key_file,) = (data / "keys").glob("*-RS256.pem")
    assert key_file.stat().st_mode & 0o077 == 0
    assert "BEGIN" not in server.log()  # no key material in the log
    assert PASSWORD not in server.log()


def test_the_signing_key_survives_a_restart(tmp_path: Path) -> None:
    # The restarted server listens on another port: keep one issuer across both runs.
    env = {"AUTHSVC_ISSUER": "https://auth.example.com"}
    with serve(tmp_path, env=env) as server:
        token = register_and_login(server, "restart@example.com")
    with serve(tmp_path, env=env) as server, httpx.Client(base_url=server.base_url) as client:
        me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text


def test_several_workers_share_keys_and_data(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as server:
        token = register_and_login(server, "workers@example.com")
        kids = set()
        for _ in range(12):
            # A fresh connection each time, so requests spread over both workers.
            with httpx.Client(base_url=server.base_url) as client:
                me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
                assert me.status_code == 200
                kids.add(client.get("/.well-known/jwks.json").json()["keys"][0]["kid"])
        assert len(kids) == 1
    assert server.log().count("Application startup complete") == 2
