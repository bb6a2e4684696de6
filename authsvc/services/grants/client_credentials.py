"""The client credentials grant (RFC 6749 §4.4): a service client's own token."""

from __future__ import annotations

from authsvc.services import clients
from authsvc.services.grants.base import GrantContext, TokenRequest
from authsvc.services.issuer import IssuedTokens


class ClientCredentialsGrant:
    grant_type = "client_credentials"

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        # RFC 6749 §2.3.1: HTTP Basic, or client_id and client_secret in the form.
        given = clients.credentials(
            request.authorization, request.optional("client_id"), request.optional("client_secret")
        )
        if given is None:
            raise clients.invalid_client()
        context.limiter.hit(context.rules.login_ip, request.client_ip)
        client = await clients.authenticate(context.db, *given)
        return await context.issuer.for_client(client)
