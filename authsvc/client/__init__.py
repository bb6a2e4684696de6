"""For services that accept authsvc's access tokens.

Needs only ``httpx`` and ``PyJWT[crypto]`` (``pip install 'authsvc[client]'``), none of the
server's dependencies. ``authsvc.client.fastapi`` adds FastAPI dependencies on top.
"""

from authsvc.client.verifier import InvalidToken, TokenVerifier

__all__ = ["InvalidToken", "TokenVerifier"]
