"""The RBAC engine, pure: composite roles, wildcards, cycles, principals."""

from __future__ import annotations

import uuid

import pytest

from authsvc.authz.engine import ANONYMOUS, Principal, RoleGraph, RoleNode, token_permissions
from authsvc.authz.permissions import grants, is_valid_permission


def graph() -> RoleGraph:
    def node(name: str, perms: set[str], parents: set[str]) -> RoleNode:
        return RoleNode(name, frozenset(perms), frozenset(parents))

    return RoleGraph(
        {
            "viewer": node("viewer", {"users:read"}, set()),
            "editor": node("editor", {"users:write"}, {"viewer"}),
            "chief": node("chief", {"audit:read"}, {"editor"}),
            "other": node("other", {"orders:*"}, set()),
        }
    )


def test_effective_permissions_follow_parents() -> None:
    assert graph().effective(["chief"]) == {
        "users:read": {"chief"},
        "users:write": {"chief"},
        "audit:read": {"chief"},
    }
    both = graph().effective(["editor", "viewer"])
    assert both["users:read"] == {"editor", "viewer"}
    assert graph().effective_roles(["chief"]) == {"chief", "editor", "viewer"}
    assert graph().effective(["unknown"]) == {}


def test_descendants_and_cycles() -> None:
    g = graph()
    assert g.descendants("viewer") == {"viewer", "editor", "chief"}
    assert g.descendants("chief") == {"chief"}
    assert g.would_cycle("viewer", ["chief"])
    assert g.would_cycle("viewer", ["viewer"])
    assert not g.would_cycle("chief", ["other"])


@pytest.mark.parametrize(
    ("held", "wanted", "expected"),
    [
        ("users:read", "users:read", True),
        ("users:*", "users:delete", True),
        ("users:*", "roles:read", False),
        ("*", "anything:at-all", True),
        ("users:read", "users:write", False),
        ("users", "users:read", False),
    ],
)
def test_grants(held: str, wanted: str, expected: bool) -> None:
    assert grants(held, wanted) is expected


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("users:read", True),
        ("orders:refund", True),
        ("orders:*", True),
        ("a.b-c_d:e.f-g_h", True),
        ("Users:read", False),
        ("users", False),
        ("users:", False),
        (":read", False),
        ("users:read:all", False),
        ("users:re ad", False),
        ("*:read", False),
        ("users:**", False),
        ("u" * 64 + ":read", False),
    ],
)
def test_permission_names(name: str, valid: bool) -> None:
    assert is_valid_permission(name) is valid


def test_principals() -> None:
    assert not ANONYMOUS.is_authenticated and not ANONYMOUS.has("users:read")
    user = Principal(uuid.uuid4(), permissions=frozenset({"users:*"}))
    assert user.has("users:delete") and user.missing(["users:read", "audit:read"]) == ["audit:read"]
    root = Principal(uuid.uuid4(), is_superuser=True)
    assert root.missing(["audit:read", "x:y"]) == []
    assert token_permissions(True, ["a:b"]) == ["*"]
    assert token_permissions(False, ["b:c", "a:b", "a:b"]) == ["a:b", "b:c"]
