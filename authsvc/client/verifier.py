"""``TokenVerifier``: validate authsvc access tokens offline, against the issuer's JWKS.

The JWKS location comes from the issuer's RFC 8414 metadata. Keys are cached for as long as the
JWKS response's ``Cache-Control: max-age`` says; a token naming an unknown ``kid`` triggers a
refetch, at most once per ``min_refetch_seconds``, so forged key ids cannot make a verifier hammer
the issuer. Validation follows RFC 9068 §4: ``typ`` must be ``at+jwt``; the algorithm must be in
the allow-list *and* be the key's own; ``iss``, ``aud``, ``exp`` (and ``nbf``) are checked with a
small leeway.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import jwt

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
_MAX_AGE = re.compile(r"max-age=(\d+)")


class InvalidToken(Exception):
    """The token must be refused. The message says why, for logs (not for the caller)."""


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, only to pick the key: ``jwt.decode`` then checks everything again.

    (PyJWT's own header parser validates base64 character by character in Python, which
    costs more than the RSA signature check; this one leaves that to ``jwt.decode``.)
    """
    encoded = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("malformed token header") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token header")
    return header


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway_seconds: float = 30.0,
        min_refetch_seconds: float = 30.0,
        default_cache_seconds: float = 300.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        introspect_as: tuple[str, str] | None = None,
    ) -> None:
        """``introspect_as=(client_id, client_secret)``: after the offline checks, also ask
        the issuer (RFC 7662) whether the token is still active, so a logout or revocation is
        seen at once. One request to the issuer per verification."""
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.leeway = leeway_seconds
        self.min_refetch = min_refetch_seconds
        self.default_cache = default_cache_seconds
        self._http = http
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fresh_until = 0.0
        self._last_fetch = float("-inf")
        self._jwks_uri: str | None = None
        self._introspection_uri: str | None = None
        self._introspect_as = introspect_as
        self._lock = asyncio.Lock()
        self.fetches = 0  # JWKS downloads so far (observability, tests)

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is a valid access token from this issuer for us."""
        header = _header(token)
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidToken("not an access token (typ is not at+jwt)")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise InvalidToken(f"algorithm {alg!r} not allowed")
        if not isinstance(kid, str):
            raise InvalidToken("no key id")
        key = await self._key(kid)
        if key is None:
            raise InvalidToken("unknown key id")
        if key.algorithm_name != alg:
            raise InvalidToken("algorithm does not match the key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        if self._introspect_as is not None and not await self._active(token):
            raise InvalidToken("the issuer says the token is no longer active")
        return claims

    async def _active(self, token: str) -> bool:
        if self._introspection_uri is None:
            raise InvalidToken("the issuer publishes no introspection endpoint")
        assert self._introspect_as is not None
        client = self._http or httpx.AsyncClient(timeout=10)
        try:
            response = await client.post(
                self._introspection_uri, data={"token": token}, auth=self._introspect_as
            )
            response.raise_for_status()
            return response.json().get("active") is True
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidToken(f"introspection failed: {exc!r}") from None
        finally:
            if self._http is None:
                await client.aclose()

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        now = self._clock()
        if now < self._fresh_until and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = self._clock()
            stale = now >= self._fresh_until
            unknown = kid not in self._keys
            if stale or (unknown and now - self._last_fetch >= self.min_refetch):
                try:
                    await self._refresh()
                except InvalidToken:
                    # The issuer is unreachable: keep verifying with the keys we know, and do
                    # not ask again before min_refetch_seconds.
                    self._fresh_until = now + self.min_refetch
                    if kid not in self._keys:
                        raise
            return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._last_fetch = self._clock()
        client = self._http or httpx.AsyncClient(timeout=10)
        try:
            if self._jwks_uri is None:
                metadata = await client.get(
                    f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
                )
                metadata.raise_for_status()
                document = metadata.json()
                if document.get("issuer") != self.issuer:
                    raise InvalidToken("the metadata names another issuer")
                self._jwks_uri = str(document["jwks_uri"])
                endpoint = document.get("introspection_endpoint")
                self._introspection_uri = str(endpoint) if endpoint else None
            response = await client.get(self._jwks_uri)
            response.raise_for_status()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            # Keep the keys we have; say why the new ones could not be had.
            raise InvalidToken(f"cannot fetch the issuer's keys: {exc!r}") from None
        finally:
            if self._http is None:
                await client.aclose()
        self.fetches += 1
        keys: dict[str, jwt.PyJWK] = {}
        for entry in response.json().get("keys", []):
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type we cannot use is skipped, not fatal
            if key.key_id and key.algorithm_name in self.algorithms:
                keys[key.key_id] = key
        self._keys = keys
        match = _MAX_AGE.search(response.headers.get("cache-control", ""))
        lifetime = float(match.group(1)) if match else self.default_cache
        self._fresh_until = self._last_fetch + lifetime
