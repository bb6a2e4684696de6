"""Issue 11: the generated no-escalation test.

For a matrix of callers (each built-in permission alone, a role manager, a department admin,
a holder of another service's permission, an administrator by role) it tries every route that
creates, renames, re-parents, grants, assigns, unassigns or deletes roles and permissions, or
changes another account, against one seeded world, and checks after every request:

- no answer is a 500; a refused request leaves the database exactly as it was;
- after a change that went through, no account holds a power it did not hold before unless the
  caller held that power at the start (nobody confers what they lack);
- no account holding a power the caller lacked was changed or lost a power.

A power is measured by the policies, not by the rule under test: an account's effective
permissions (superuser: all) plus every (action, resource) over the seeded users, roles and the
audit log that the loaded Cedar policies permit it — so a role name or an attribute that a
policy keys on counts, through composite roles too.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from authsvc.authz.cedar import CedarRequest, decide, entity, request_context, uid
from authsvc.authz.engine import RoleGraph, cedar_permissions
from authsvc.authz.entities import merge_entities, role_entities, user_entities
from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.db.models import OAuthClient, Permission, Role, Session, User
from authsvc.db.repositories import roles as repo
from authsvc.services.container import AppServices
from authsvc.services.policies import AUTHSVC_ACTIONS
from tests.conftest import PASSWORD, TEST_CLIENT_IP, MakeUser

SELF = "~self"
NEW_PASSWORD = "an entirely new passphrase"
OTHER = "orders:refund"
# Every action authsvc asks the policies about, by the type of its resource.
USER_ACTIONS = [a for a, kind in AUTHSVC_ACTIONS.items() if kind == "User"]
ROLE_ACTIONS = [a for a, kind in AUTHSVC_ACTIONS.items() if kind == "Role"]

# name -> (permissions, parents); seeded besides `admin` and `user`.
SEED_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "department_admin": ((), ()),
    "refunds": ((OTHER,), ()),
    "auditors": (("audit:read",), ()),
    "ops": ((), ("auditors",)),
    "role-managers": (("roles:write", "roles:read"), ()),
    **{f"only-{p.replace(':', '-')}": ((p,), ()) for p in BUILTIN_PERMISSIONS},
}
# email -> (roles, attributes, superuser)
SEED_USERS: dict[str, tuple[tuple[str, ...], dict[str, Any], bool]] = {
    "root": ((), {"department": "sales"}, True),
    "admin2": (("admin",), {}, False),
    "dana": (("department_admin", "user"), {"department": "sales"}, False),
    "alice": (("user",), {"department": "sales"}, False),
    "bob": (("refunds", "user"), {"department": "sales"}, False),
    "carol": (("ops", "user"), {"department": "research"}, False),
}
# caller id -> (the seeded user it is, or None for a new one, and its roles)
CALLERS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    **{
        f"holder-of-{p.replace(':', '-')}": (None, (f"only-{p.replace(':', '-')}",))
        for p in BUILTIN_PERMISSIONS
    },  # fmt: skip
    "role-manager": (None, ("role-managers",)),
    "department-admin": ("dana", ()),
    "other-service": ("bob", ()),
    "admin-by-role": ("admin2", ()),
}


def email(name: str) -> str:
    return f"{name}@example.com"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Hundreds of requests from one caller: rate limits are not what this test is about; nor
    # is email verification (a caller that unverifies itself must still sign in again).
    return {"ratelimit_enabled": False, "require_verified_email": False}


@dataclass
class World:
    services: AppServices
    client: httpx.AsyncClient
    ids: dict[str, uuid.UUID]
    caller: str
    me: str  # the caller's name in ids
    email: str
    role_names: list[str] = field(default_factory=list)
    password: str = PASSWORD
    headers: dict[str, str] = field(default_factory=dict)

    async def login(self) -> bool:
        """Sign in by password, then as if the second factor followed (the session's amr
        says so; a refresh carries it into the token): callers act at full strength, as the
        oracle measures powers (roles that need MFA in force, ``context.mfa``). Withholding
        without MFA is tests/api/test_mfa_policies.py's."""
        response = await self.client.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": self.email,
                "password": self.password,
            },
        )
        if response.status_code != 200:
            return False
        tokens = response.json()
        async with self.services.sessionmaker() as session:
            claims = self.services.codec.verify(tokens["access_token"])
            await session.execute(
                update(Session)
                .where(Session.id == uuid.UUID(claims["sid"]))
                .values(amr="pwd otp mfa")
            )
            await session.commit()
        response = await self.client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        assert response.status_code == 200, response.text
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return True

    async def request(self, method: str, path: str, body: Any) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if body is not _NO_BODY:
            kwargs["json"] = body
        response = await self.client.request(method, path, **kwargs)
        code = _code(response)
        if response.status_code == 401 and code in ("TOKEN_STALE", "TOKEN_REVOKED"):
            assert await self.login(), "the caller can no longer sign in"
            kwargs["headers"] = self.headers
            response = await self.client.request(method, path, **kwargs)
        return response


_NO_BODY = object()


def _code(response: httpx.Response) -> str | None:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return None
    return detail.get("code") if isinstance(detail, dict) else None


async def seed(services: AppServices, make_user: MakeUser, caller: str) -> dict[str, uuid.UUID]:
    ids: dict[str, uuid.UUID] = {}
    async with services.sessionmaker() as session:
        permission = Permission(name=OTHER, description="another service's permission")
        session.add(permission)
        await session.flush()
        for name, (permissions, parents) in SEED_ROLES.items():
            role = Role(name=name)
            session.add(role)
            await session.flush()
            for perm in permissions:
                found = await repo.get_permission(session, perm)
                assert found is not None
                await repo.grant(session, role.id, found.id)
            await repo.set_parents(
                session, role.id, list((await repo.get_roles_by_name(session, parents)).values())
            )
        await session.commit()
    users = dict(SEED_USERS)
    seeded_as, roles = CALLERS[caller]
    if seeded_as is None:
        users[caller] = (roles, {"department": "sales"}, False)
    for name, (user_roles, attributes, superuser) in users.items():
        user = await make_user(email(name), is_superuser=superuser)
        ids[name] = user.id
        async with services.sessionmaker() as session:
            stored = await session.get(User, user.id)
            assert stored is not None
            stored.attributes = attributes
            for role_name in user_roles:
                role = await repo.get_role(session, role_name)
                assert role is not None
                await repo.assign(session, user.id, role.id)
            await session.commit()
    return ids


# --- the oracle --------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    row: tuple[Any, ...]  # email, password hash, active, superuser, verified, attributes
    roles: tuple[str, ...]
    power: frozenset[str]


async def snapshot(world: World) -> dict[str, Account]:
    services = world.services
    async with services.sessionmaker() as session:
        graph = await repo.load_graph(session)
        users = {u.id: u for u in await session.scalars(select(User))}
        assigned = {uid_: await repo.user_role_names(session, uid_) for uid_ in users}
    entities: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for user in users.values():
        entities[user.id] = user_entities(
            user_id=user.id,
            email=user.email,
            is_active=user.is_active,
            is_superuser=user.is_superuser,
            is_verified=user.is_verified,
            roles=graph.effective_roles(assigned[user.id]),
            permissions=graph.effective(assigned[user.id]),
            attributes=user.attributes or {},
        )
    accounts = {}
    for name, user_id in world.ids.items():
        user = users.get(user_id)
        if user is None:
            continue
        power = _power(world, graph, user, assigned[user_id], entities, users)
        row = (
            user.email,
            user.hashed_password,
            user.is_active,
            user.is_superuser,
            user.is_verified,
            json.dumps(user.attributes, sort_keys=True),
        )
        accounts[name] = Account(row, tuple(sorted(assigned[user_id])), power)
    return accounts


def _power(
    world: World,
    graph: RoleGraph,
    user: User,
    assigned: Iterable[str],
    entities: dict[uuid.UUID, list[dict[str, Any]]],
    users: dict[uuid.UUID, User],
) -> frozenset[str]:
    if not user.is_active:
        return frozenset()
    atoms = perm_atoms(user.is_superuser, graph.effective(list(assigned)))
    if user.is_superuser:
        atoms.add("superuser")
    bundle = world.services.policies.bundle
    # At full strength: signed in with a second factor (World.login).
    context = request_context(TEST_CLIENT_IP, world.services.settings.trusted_networks, mfa=True)
    principal = entities[user.id]
    requests: list[tuple[str, dict[str, str], list[dict[str, Any]], str]] = []
    for name, target_id in world.ids.items():
        # Power over oneself (the own-profile policy) is its own kind: `action@~self`.
        label = SELF if target_id == user.id else name
        if target_id in users:
            for action in USER_ACTIONS:
                requests.append((action, uid("User", str(target_id)), entities[target_id], label))
    for role in world.role_names:
        for action in ROLE_ACTIONS:
            requests.append((action, uid("Role", role), role_entities(graph, [role]), role))
    requests.append(("audit:read", uid("AuditLog", "audit"), [entity("AuditLog", "audit")], ""))
    for action, resource, resource_entities, label in requests:
        merged = merge_entities(principal, resource_entities)
        request = CedarRequest(principal[0]["uid"], action, resource, context)
        if decide(bundle, request, merged).allowed:
            atoms.add(f"{action}@{label}")
    return frozenset(atoms)


def perm_atoms(superuser: bool, held: Iterable[str]) -> set[str]:
    """``perm:NAME`` for every permission held; authsvc's wildcards as the permissions they
    stand for (``users:*`` is ``users:read``, ``users:write``, ``users:delete``)."""
    return {
        f"perm:{p}"
        for p in cedar_permissions(superuser, held)
        if not (p.endswith(":*") and any(b.startswith(p[:-1]) for b in BUILTIN_PERMISSIONS))
    }


async def digest(services: AppServices) -> str:
    """Everything a refused request must leave alone."""
    queries = [
        "SELECT id, email, hashed_password, is_active, is_superuser, is_verified, attributes, "
        'authz_version FROM "user"',
        "SELECT user_id, role_id FROM user_roles",
        "SELECT id, name, description FROM roles",
        "SELECT role_id, parent_id FROM role_parents",
        "SELECT role_id, permission_id FROM role_permissions",
        "SELECT id, name FROM permissions",
        "SELECT id, permissions FROM oauth_clients",
        # Sign-ins are in the trail too (a re-login of the caller after a stale token).
        "SELECT count(*) FROM audit_events WHERE action NOT LIKE 'auth.login.%'",
        # Ended sessions (a re-login of the caller after a stale token adds a live one).
        "SELECT id, revoked_at FROM sessions WHERE revoked_at IS NOT NULL",
    ]
    hashed = hashlib.sha256()
    async with services.engine.connect() as conn:
        for query in queries:
            rows = (await conn.execute(text(query))).all()
            hashed.update(repr(sorted(repr(tuple(r)) for r in rows)).encode())
    return hashed.hexdigest()


# --- the routes that change powers -------------------------------------------------------


Mutation = tuple[str, str, Any]
PERMS = [*BUILTIN_PERMISSIONS, OTHER, "users:*"]
STRONG_ROLES = ["admin", "department_admin", "auditors", "refunds", "ops"]
ACCOUNT_BODIES: list[dict[str, Any]] = [
    {"attributes": None},
    {"attributes": {"department": "research"}},
    {"attributes": {"department": "sales"}},
    {"attributes": {}},
    {"is_superuser": True},
    {"is_verified": False},
    {"password": NEW_PASSWORD},
    {"password": NEW_PASSWORD, "current_password": PASSWORD},
    {"is_active": False},
]


def role_mutations(world: World) -> list[Mutation]:
    ids, caller = world.ids, world.caller
    own_role = CALLERS[caller][1][0] if CALLERS[caller][1] else "user"
    found: list[Mutation] = []
    found += [("POST", "/roles", {"name": f"new-child-{i}", "parents": [parent]})
              for i, parent in enumerate(STRONG_ROLES)]  # fmt: skip
    found += [("POST", "/roles", {"name": f"new-perm-{i}", "permissions": [perm]})
              for i, perm in enumerate(PERMS)]  # fmt: skip
    for role in (own_role, "user"):
        found += [("PUT", f"/roles/{role}/permissions/{perm}", _NO_BODY) for perm in PERMS]
        found += [("PATCH", f"/roles/{role}", {"parents": [parent]}) for parent in STRONG_ROLES]
    for role in STRONG_ROLES:
        found.append(("PUT", f"/users/{ids[world.me]}/roles/{role}", _NO_BODY))
        found.append(("PUT", f"/users/{ids['alice']}/roles/{role}", _NO_BODY))
    found.append(("PATCH", "/roles/ops", {"parents": []}))
    found += [("DELETE", f"/roles/{role}/permissions/{perm}", _NO_BODY)
              for role, perm in (("auditors", "audit:read"), ("refunds", OTHER),
                                 ("admin", "users:read"))]  # fmt: skip
    found += [("PATCH", f"/roles/{role}", {"name": f"renamed-{role}"})
              for role in ("department_admin", "auditors", "refunds", "ops")]  # fmt: skip
    return found


def mutations(world: World) -> list[Mutation]:
    """Every route that changes powers, on every kind of target; deletions last, and the
    caller's own account at the very end (a caller may lock themself out)."""
    ids = world.ids
    others = [n for n in ("root", "admin2", "dana", "alice", "bob", "carol") if n != world.me]

    def account(target: str) -> list[Mutation]:
        found: list[Mutation] = [("PATCH", f"/users/{ids[target]}", b) for b in ACCOUNT_BODIES]
        found.append(("PATCH", f"/users/{ids[target]}", {"email": f"moved-{target}@example.com"}))
        found.append(("DELETE", f"/users/{ids[target]}/sessions", _NO_BODY))
        return found

    found = role_mutations(world)
    for target in others:
        found += account(target)
    found += [("DELETE", f"/users/{ids[user]}/roles/{role}", _NO_BODY)
              for user, role in (("carol", "ops"), ("dana", "department_admin"),
                                 ("bob", "refunds"), ("admin2", "admin"))]  # fmt: skip
    found += [("POST", "/clients", {"name": "c", "permissions": [perm]}) for perm in PERMS]
    found += [("DELETE", f"/roles/{role}?force=true", _NO_BODY)
              for role in ("department_admin", "auditors", "refunds", "ops", "admin")]  # fmt: skip
    found += [("DELETE", f"/users/{ids[target]}", _NO_BODY) for target in others]
    found += account(world.me)
    found.append(("DELETE", f"/users/{ids[world.me]}", _NO_BODY))
    return found


def check_change(
    label: str, body: Any, path: str, state: dict[str, Account], after: dict[str, Account],
    initial: frozenset[str], world: World,
) -> None:  # fmt: skip
    """The two assertions after a change that went through."""
    omnipotent = "superuser" in initial
    if path == "/clients":
        # The caller now holds a client secret: its permissions are the caller's too.
        assert perm_atoms(False, body["permissions"]) <= initial or omnipotent, label
    # Atoms about an account the change itself touched are the change, not a power given or
    # taken: moving alice out of a department is decided on alice (the caller must cover her).
    touched = {
        name
        for name, was in state.items()
        if (now := after.get(name)) is None or now.row != was.row or now.roles != was.roles
    }
    for name, account in after.items():
        was = state.get(name)
        gained = {
            atom
            for atom in account.power - (was.power if was else frozenset())
            if name in touched or _about(atom) not in touched
        }
        assert gained <= initial or omnipotent, f"{label} gave {name} {sorted(gained - initial)}"
    for name, was in state.items():
        now = after.get(name)
        lost = [atom for atom in was.power - (now.power if now else frozenset())
                if _about(atom) not in touched]  # fmt: skip
        if name in touched or lost:
            lacked = sorted(was.power - initial)
            assert not lacked or omnipotent, (
                f"{label} changed {name}, who holds {lacked} that the caller lacks"
            )


def _about(atom: str) -> str | None:
    """The account or role a policy atom (``action@name``) is about."""
    return atom.partition("@")[2] or None


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_nobody_gains_or_takes_a_power_they_do_not_hold(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, caller: str
) -> None:
    ids = await seed(services, make_user, caller)
    me = CALLERS[caller][0] or caller
    world = World(services, client, ids, caller, me, email(me), ["admin", "user", *SEED_ROLES])
    assert await world.login()
    state = await snapshot(world)
    # What the caller holds, its power over itself also as power over that account.
    initial = state[me].power | {a.replace(f"@{SELF}", f"@{me}") for a in state[me].power}
    before_digest = await digest(services)
    went_through: list[str] = []

    for method, path, body in mutations(world):
        label = f"{caller}: {method} {path} {body if body is not _NO_BODY else ''}"
        response = await world.request(method, path, body)
        assert response.status_code < 500, (label, response.text)
        if response.status_code >= 400:
            assert await digest(services) == before_digest, f"refused but written: {label}"
            continue
        went_through.append(label)
        after = await snapshot(world)
        check_change(label, body, path, state, after, initial, world)
        state, before_digest = after, await digest(services)
        if me not in state or not state[me].row[2]:
            break  # the caller deleted or deactivated themself
        if isinstance(body, dict) and "password" in body and path.endswith(str(ids[me])):
            world.password = NEW_PASSWORD

    # Not vacuous: what a caller holds, it can still give and take.
    expected = {
        "admin-by-role": [
            "PUT /roles/user/permissions/audit:read",
            f"PATCH /users/{ids['carol']}",
            "DELETE /roles/auditors/permissions/audit:read",
            "PATCH /roles/ops {'parents': []}",
        ],
        "role-manager": ["POST /roles", "PUT /roles/role-managers/permissions/roles:read"],
        "holder-of-users-write": [f"PATCH /users/{ids['alice']}"],
        "department-admin": [f"PATCH /users/{ids['alice']}"],
        "holder-of-users-delete": [f"DELETE /users/{ids['alice']}"],
    }
    for wanted in expected.get(caller, []):
        assert any(wanted in done for done in went_through), (wanted, "\n".join(went_through))


async def test_clients_are_counted(services: AppServices) -> None:
    """The digest above sees service clients (a client holds permissions)."""
    before = await digest(services)
    async with services.sessionmaker() as session:
        session.add(OAuthClient(id="svc-x", name="x", secret_hash="x", permissions=[]))
        await session.commit()
    assert await digest(services) != before
