"""The fastapi-users ``Strategy`` for our access tokens: JWTs from ``AccessTokenCodec``."""

from __future__ import annotations

import logging
import uuid

from fastapi_users import exceptions
from fastapi_users.authentication.strategy import Strategy, StrategyDestroyNotSupportedError
from fastapi_users.manager import BaseUserManager

from authsvc.db.models import User
from authsvc.db.repositories.sessions import is_live, user_with_session
from authsvc.security.tokens import AccessTokenCodec, InvalidTokenError
from authsvc.services.users import UserManager

log = logging.getLogger("authsvc.tokens")


class AccessTokenStrategy(Strategy[User, uuid.UUID]):
    def __init__(self, codec: AccessTokenCodec) -> None:
        self.codec = codec

    async def read_token(
        self, token: str | None, user_manager: BaseUserManager[User, uuid.UUID]
    ) -> User | None:
        if token is None:
            return None
        try:
            claims = self.codec.verify(token)
            user_id = user_manager.parse_id(claims["sub"])
            session_id = uuid.UUID(str(claims.get("sid")))
        except InvalidTokenError as exc:
            log.info("access token refused: %s", exc)
            return None
        except (exceptions.InvalidID, ValueError):
            return None
        db = getattr(user_manager, "session", None)
        if db is None:
            return None
        user, login = await user_with_session(db, user_id, session_id)
        # A signed-out or revoked session's tokens stop working at once, not at expiry.
        if not is_live(login):
            return None
        if isinstance(user_manager, UserManager):
            user_manager.caller_session_id = session_id  # an email change keeps this session
        return user

    async def write_token(self, user: User) -> str:
        return self.codec.issue(str(user.id)).token

    async def destroy_token(self, token: str, user: User) -> None:
        # Stateless JWTs cannot be destroyed; they expire (revocation comes with sessions).
        raise StrategyDestroyNotSupportedError()
