"""Without AUTHSVC_ISSUER, ``authsvc serve --port N`` is its own issuer at port N: the
discovery document, the tokens' ``iss`` and the verifiers all agree on where it is."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest

from tests.integration.procs import serve

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


# One worker (the README's command) runs the app in the serving process itself, where the
# settings were read before the issuer was derived; two workers read theirs afresh.
@pytest.mark.parametrize("workers", [1, 2])
def test_the_issuer_is_where_serve_listens(tmp_path: Path, workers: int) -> None:
    # An empty value means unset (compose files write optional values so).
    # Registration answers 201 and sign-in needs no mailbox: verification is not the point here.
    env = {"AUTHSVC_ISSUER": "", "AUTHSVC_REQUIRE_VERIFIED_EMAIL": "false"}
    with serve(tmp_path, workers=workers, env=env) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            # Several fresh connections: every worker must know the derived issuer.
            documents = [
                httpx.get(f"{server.base_url}{path}", timeout=30)
                for path in ("/.well-known/oauth-authorization-server",
                             "/.well-known/openid-configuration") * 3
            ]  # fmt: skip
            assert {d.status_code for d in documents} == {200}
            assert len({d.content for d in documents}) == 1
            metadata = documents[0].json()
            assert metadata["issuer"] == server.base_url  # http://127.0.0.1:<the free port>
            assert metadata["token_endpoint"] == f"{server.base_url}/auth/token"

            created = client.post(
                "/auth/register", json={"email": "bind@example.com", "password": PASSWORD}
            )
            assert created.status_code == 201, created.text
            tokens = client.post(
                "/auth/token",
                data={"grant_type": "password", "username": "bind@example.com",
                      "password": PASSWORD},
            )  # fmt: skip
            assert tokens.status_code == 200, tokens.text
        claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
        assert claims["iss"] == server.base_url
    assert f"issuer {server.base_url}" in server.log()
