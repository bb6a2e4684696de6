"""Create the first superuser (``authsvc create-admin``), outside any HTTP request."""

from __future__ import annotations

import uuid

from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase
from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError

from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.db.models import User
from authsvc.db.session import create_engine, create_sessionmaker
from authsvc.security.password_policy import PasswordPolicy, load_common_passwords
from authsvc.security.passwords import PasswordHasher

_EMAIL = TypeAdapter(EmailStr)


class AdminCreationError(Exception):
    """The admin could not be created; the message says why, for the operator."""


async def create_admin(settings: Settings, email: str, password: str) -> uuid.UUID:
    try:
        email = _EMAIL.validate_python(email)
    except ValidationError:
        raise AdminCreationError(f"{email!r} is not a valid email address") from None
    policy = PasswordPolicy(
        min_length=settings.password_min_length,
        max_length=settings.password_max_length,
        common_passwords=load_common_passwords(),
    )
    reason = policy.check(password, email=email)
    if reason is not None:
        raise AdminCreationError(reason)
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, max_concurrency=1)
    hashed = await hasher.hash(password)

    if settings.migrate_on_start:
        import anyio.to_thread

        await anyio.to_thread.run_sync(migrations.upgrade, settings.resolved_database_url)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            users: SQLAlchemyUserDatabase[User, uuid.UUID] = SQLAlchemyUserDatabase(session, User)
            if await users.get_by_email(email) is not None:
                raise AdminCreationError(f"a user with email {email} already exists")
            try:
                user = await users.create(
                    {
                        "email": email,
                        "hashed_password": hashed,
                        "is_active": True,
                        "is_superuser": True,
                        "is_verified": True,
                    }
                )
            except IntegrityError:
                raise AdminCreationError(f"a user with email {email} already exists") from None
            return user.id
    finally:
        await engine.dispose()
