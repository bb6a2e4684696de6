"""The permissions authsvc itself declares, and what a permission name looks like.

Synced into the ``permissions`` table at start-up (``services.roles.sync_builtin``); the
``admin`` role always holds all of them. Admins may add permissions for other services.
"""

from __future__ import annotations

import re

# resource:action, lower case; the action may be "*" (every action on the resource).
PERMISSION_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}:(\*|[a-z][a-z0-9_.-]{0,62})$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

ADMIN_ROLE = "admin"
USER_ROLE = "user"

BUILTIN_PERMISSIONS: dict[str, str] = {
    "users:read": "List and read user accounts.",
    "users:write": "Change user accounts (email, password, flags).",
    "users:delete": "Delete user accounts.",
    "roles:read": "List roles, their permissions, members and users' roles.",
    "roles:write": "Create, change and delete roles; assign roles to users.",
    "permissions:read": "List permissions and users' effective permissions.",
    "permissions:write": "Declare new permissions.",
    "audit:read": "Read the audit trail.",
    "clients:read": "List service clients.",
    "clients:write": "Register and delete service clients.",
    "keys:read": "List the signing keys.",
    "keys:write": "Rotate the signing key.",
    "authz:check": "Ask for policy decisions about any principal (POST /authz/check).",
    "policies:read": "See the loaded policy set.",
    "policies:write": "Reload the policy set.",
}


def is_valid_permission(name: str) -> bool:
    return PERMISSION_NAME.fullmatch(name) is not None


# In a token's ``permissions`` claim: every permission (a superuser).
EVERYTHING = "*"


def grants(held: str, wanted: str) -> bool:
    """Does holding ``held`` grant ``wanted``? ``users:*`` grants every ``users:`` action."""
    if held in (wanted, EVERYTHING):
        return True
    resource, _, action = held.partition(":")
    return action == "*" and wanted.partition(":")[0] == resource
