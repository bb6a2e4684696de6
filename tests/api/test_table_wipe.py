"""The per-test wipe (``tests/conftest.py``) returns every table to the migrated state.

A table the wipe forgets leaks rows from one test into the next (``oauth_clients`` did: a
client named ``orders`` left by one test broke the next test that registered one). Here rows
go into every kind of table through the API, the wipe runs, and every table the models
declare must hold only the seeded rows: roles ``admin`` and ``user``, the built-in
permissions, and ``admin``'s grants of them.
"""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select, text

from authsvc.db.models import Base
from authsvc.services.container import AppServices
from tests.conftest import RESET_STATEMENTS, Login, MakeUser

SEEDED_ROLES = {"admin", "user"}
# What the test below puts rows in (the revocation list is exercised in test_oauth.py).
POPULATED = {
    "user", "sessions", "refresh_tokens", "audit_events", "permissions", "roles",
    "role_parents", "role_permissions", "user_roles", "oauth_clients",
}  # fmt: skip


async def _leftovers(services: AppServices) -> dict[str, int]:
    """Rows beyond the seeded ones, per table (a table missing here has none)."""
    found: dict[str, int] = {}
    async with services.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            count = select(func.count()).select_from(table)
            if table.name == "roles":
                count = count.where(table.c.name.not_in(SEEDED_ROLES))
            elif table.name == "permissions":
                count = count.where(table.c.builtin.is_(False))
            elif table.name == "role_permissions":
                admin = select(text("id")).select_from(text("roles")).where(text("name='admin'"))
                builtin = (
                    select(text("id"))
                    .select_from(text("permissions"))
                    .where(text("builtin = true"))
                )
                count = count.where(
                    ~(table.c.role_id.in_(admin) & table.c.permission_id.in_(builtin))
                )
            rows = int((await conn.execute(count)).scalar_one())
            if rows:
                found[table.name] = rows
    return found


async def test_the_wipe_leaves_only_the_seeded_rows(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    admin_headers: dict[str, str],
) -> None:
    admin = admin_headers
    member = await make_user("member@example.com")
    await login("member@example.com")  # a session and a refresh token
    steps = [
        client.post("/permissions", headers=admin, json={"name": "orders:refund"}),
        client.post("/roles", headers=admin, json={"name": "clerk"}),
        client.post("/roles", headers=admin, json={"name": "senior-clerk", "parents": ["clerk"]}),
        client.put("/roles/clerk/permissions/orders:refund", headers=admin),
        # admin may hold more than the built-ins: that grant must go too
        client.put("/roles/admin/permissions/orders:refund", headers=admin),
        client.put(f"/users/{member.id}/roles/clerk", headers=admin),
        client.post("/clients", headers=admin, json={"name": "orders", "permissions": []}),
    ]
    for step in steps:
        response = await step
        assert response.status_code < 300, (response.request.url, response.text)
    assert POPULATED <= set(await _leftovers(services))

    async with services.engine.begin() as conn:
        for statement in RESET_STATEMENTS:
            await conn.execute(text(statement))

    assert await _leftovers(services) == {}


def test_the_wipe_covers_every_table() -> None:
    """Derived from the models: a table added later is wiped without anyone listing it."""
    wiped = {re.match(r'DELETE FROM "?(\w+)', statement)[1] for statement in RESET_STATEMENTS}  # type: ignore[index]
    assert wiped == {table.name for table in Base.metadata.sorted_tables}
