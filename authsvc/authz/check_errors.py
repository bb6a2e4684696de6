"""Say why Cedar refused a decision request, without echoing the entities' data. Pure.

Cedar's own messages quote every entity of a request when one does not fit the schema (a
user's email, roles and attributes: ``failed to parse entities from: [...]``) and the whole
context when it does not fit the action. The caller of ``/authz/check`` needs to know what
is wrong (which entity, which attribute, which type), not to read other people's data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from authsvc.authz.cedar import PolicyBundle, check_entities

_BUILD_REQUEST = "failed to build request: "
_PARSE_ENTITIES = "failed to parse entities"
_CONTEXT_RECORD = re.compile(r"context `\{.*\}` is not valid", re.S)
_VALUE_TAIL = re.compile(r":\s*`[^`]*`\s*$", re.S)
_ATTRIBUTE = re.compile(r"in attribute `([A-Za-z_][A-Za-z0-9_]*)` on `")
_TYPES = re.compile(r"expected to have type ([a-z]+), but it actually has type ([a-z]+)")
_CEDAR_TYPES = frozenset({"string", "long", "bool", "boolean", "set", "record", "entity"})

Entities = Sequence[Mapping[str, Any]]


def explain(
    message: str,
    bundle: PolicyBundle,
    principal: Entities,
    resource: Entities,
    *,
    resource_stored: bool,
) -> str:
    """A message for a :class:`~authsvc.authz.cedar.RequestInvalid`. The principal's
    entities always come from authsvc's store; the resource's when ``resource_stored``."""
    if message.startswith(_BUILD_REQUEST):
        return _request_problem(message.removeprefix(_BUILD_REQUEST))
    if _PARSE_ENTITIES in message:
        for role, entities, stored in (
            ("principal", principal, True),
            ("resource", resource, resource_stored),
        ):
            if entities and not _fits(bundle, entities):
                return _entity_problem(message, role, entities, stored)
        return "The entities do not fit the policy schema."
    return "The request could not be evaluated against the policy schema."


def _request_problem(reason: str) -> str:
    # Names the action, entity types and attribute names the caller sent; never values.
    reason = _CONTEXT_RECORD.sub("the context is not valid", reason)
    reason = _VALUE_TAIL.sub("", reason).strip().rstrip(".")
    return f"The request does not fit the policy schema: {reason}."


def _fits(bundle: PolicyBundle, entities: Entities) -> bool:
    try:
        check_entities(bundle, entities)
    except ValueError:
        return False
    return True


def _entity_problem(message: str, role: str, entities: Entities, stored: bool) -> str:
    kind = str(entities[0]["uid"]["type"])
    what = "The stored attributes" if stored else "The attributes"
    text = f"{what} of the {role} ({kind}) do not fit the policy schema"
    # The attribute named must be one the entity has: a value cannot smuggle a name in.
    names = {str(name) for entity in entities for name in entity.get("attrs", {})}
    attribute = next((m for m in _ATTRIBUTE.findall(message) if m in names), None)
    if attribute is None:
        return f"{text}."
    text = f"{text}: attribute `{attribute}`"
    types = _TYPES.findall(message)
    if types and set(types[-1]) <= _CEDAR_TYPES:
        expected, actual = types[-1]
        return f"{text} should be a {expected}, not a {actual}."
    return f"{text} does not fit."
