"""Policy test cases: ``policies/tests/*.json``, run by ``authsvc policies test`` and pytest.

A file::

    {
      "users": {"alice": {"roles": ["department_admin"], "department": "sales"},
                "root": {"is_superuser": true}},
      "roles": {"ops": {"parents": ["admin"]}},
      "entities": [ ...other entities, in Cedar's JSON entity format... ],
      "trusted_networks": ["10.0.0.0/8"],
      "cases": [
        {"name": "a department admin edits a colleague",
         "principal": "alice", "action": "users:write", "resource": {"type": "User", "id": "bob"},
         "context": {"ip": "10.1.2.3"},
         "decision": "allow", "reasons": ["users.department-admin"]}
      ]
    }

``users`` are built the way authsvc builds them for a request (defaults: active, verified, not
a superuser, no roles, no permissions; other keys become attributes). A principal or resource
given as a string is a user of that name. ``context`` may set ``ip`` (default ``127.0.0.1``),
``mfa`` and ``now`` (ISO 8601); ``trusted_network`` follows from ``trusted_networks`` (default:
the setting's default). ``reasons``, when given, must equal the deciding policy ids.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from authsvc.authz.cedar import (
    CedarRequest,
    PolicyBundle,
    RequestInvalid,
    decide,
    entity,
    request_context,
    uid,
)
from authsvc.authz.entities import merge_entities, user_entities

DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_USER_FLAGS = ("is_active", "is_superuser", "is_verified", "roles", "permissions")


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    message: str


class CaseFileError(ValueError):
    """A test file that is not valid JSON or not of the expected shape."""


def _users(spec: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    ids: dict[str, str] = {}
    entities: list[dict[str, Any]] = []
    for name, fields in spec.items():
        if not isinstance(fields, dict):
            raise CaseFileError(f"users.{name} must be an object")
        attributes = {k: v for k, v in fields.items() if k not in _USER_FLAGS}
        ids[name] = name
        entities += user_entities(
            user_id=name,
            email=f"{name}@example.com",
            is_active=bool(fields.get("is_active", True)),
            is_superuser=bool(fields.get("is_superuser", False)),
            is_verified=bool(fields.get("is_verified", True)),
            roles=fields.get("roles", []),
            permissions=fields.get("permissions", []),
            attributes=attributes,
        )
    return ids, entities


def _roles(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        entity("Role", name, parents=[uid("Role", p) for p in fields.get("parents", [])])
        for name, fields in spec.items()
    ]


def _ref(value: Any, users: dict[str, str]) -> dict[str, str]:
    if isinstance(value, str):
        if value not in users:
            raise CaseFileError(f"no user {value!r} in this file's users")
        return uid("User", value)
    if isinstance(value, dict) and isinstance(value.get("type"), str) and "id" in value:
        return uid(value["type"], str(value["id"]))
    raise CaseFileError(f"not an entity reference: {value!r}")


def _context(case: dict[str, Any], networks: Sequence[Any]) -> dict[str, Any]:
    given = dict(case.get("context", {}))
    now = given.pop("now", None)
    context = request_context(
        given.pop("ip", "127.0.0.1"),
        networks,
        mfa=bool(given.pop("mfa", False)),
        now=datetime.fromisoformat(now) if now else None,
    )
    return {**given, **context}


def run_file(bundle: PolicyBundle, path: Path) -> list[CaseResult]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        users, user_ents = _users(spec.get("users", {}))
        base = merge_entities(user_ents, _roles(spec.get("roles", {})), spec.get("entities", []))
        networks = [ipaddress.ip_network(n) for n in spec.get("trusted_networks", DEFAULT_TRUSTED)]
        cases = spec["cases"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [CaseResult(path.name, "(file)", False, f"cannot read the cases: {exc}")]
    return [_run_case(bundle, path.name, case, users, base, networks) for case in cases]


def _run_case(
    bundle: PolicyBundle,
    file: str,
    case: dict[str, Any],
    users: dict[str, str],
    base: list[dict[str, Any]],
    networks: Sequence[Any],
) -> CaseResult:
    name = str(case.get("name", "(unnamed)"))
    try:
        request = CedarRequest(
            _ref(case["principal"], users),
            str(case["action"]),
            _ref(case["resource"], users),
            _context(case, networks),
        )
        decision = decide(bundle, request, base)
    except (CaseFileError, KeyError, ValueError, RequestInvalid) as exc:
        return CaseResult(file, name, False, f"cannot evaluate: {exc}")
    expected = case.get("decision")
    if expected not in ("allow", "deny"):
        return CaseResult(file, name, False, 'expected "decision": "allow" or "deny"')
    problems = []
    if decision.word != expected:
        problems.append(f"expected {expected}, got {decision.word}")
    if "reasons" in case and sorted(case["reasons"]) != sorted(decision.reasons):
        problems.append(f"expected reasons {case['reasons']}, got {decision.reasons}")
    if decision.errors:
        problems.append(f"errors: {decision.errors}")
    message = "; ".join(problems) or f"{decision.word} {decision.reasons}"
    return CaseResult(file, name, not problems, message)


def run_folder(bundle: PolicyBundle, folder: Path) -> list[CaseResult]:
    results: list[CaseResult] = []
    for path in sorted(folder.glob("*.json")):
        results += run_file(bundle, path)
    return results
