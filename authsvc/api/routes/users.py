"""``GET /users``: the admin list fastapi-users lacks (pagination, search, filters, total)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from authsvc.api.deps import SessionDep
from authsvc.db.repositories.users import UserFilter, list_users
from authsvc.schemas.users import UserPage, UserRead


def build_router(current_superuser: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["users"])

    @router.get(
        "",
        response_model=UserPage,
        summary="List users (superuser)",
        dependencies=[Depends(current_superuser)],
        responses={401: {"description": "Missing token"}, 403: {"description": "Not a superuser"}},
    )
    async def list_all(
        session: SessionDep,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        email_prefix: Annotated[
            str | None, Query(min_length=1, max_length=320, description="Case-insensitive.")
        ] = None,
        is_active: bool | None = None,
        is_verified: bool | None = None,
    ) -> UserPage:
        filters = UserFilter(
            email_prefix=email_prefix, is_active=is_active, is_verified=is_verified
        )
        users, total = await list_users(session, filters, limit=limit, offset=offset)
        return UserPage(
            items=[UserRead.model_validate(user) for user in users],
            total=total,
            limit=limit,
            offset=offset,
        )

    return router
