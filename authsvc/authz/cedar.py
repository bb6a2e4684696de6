"""Cedar policies from a folder: load, validate, evaluate, explain.

A folder holds ``*.cedarschema`` files (concatenated into one schema) and ``*.cedar`` files.
Every policy carries a unique ``@id("…")``; the set is built with those ids as Cedar's policy
ids, so a decision's reasons *are* the ``@id``s. Loading parses and validates everything once
into a :class:`PolicyBundle` of parsed handles; decisions reuse them and never re-parse text.

Evaluation is pure (no I/O). It fails closed: an error while evaluating any policy makes the
decision a deny, because Cedar skips a policy that errors, and a skipped ``forbid`` must not
turn into an allow.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy

_ID_ANNOTATION = re.compile(r"@id\s*\(")
ENTITY_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    policy_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: policy {self.policy_id!r}" if self.policy_id else self.file
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, str | None]:
        return {"file": self.file, "policy_id": self.policy_id, "message": self.message}


class PolicyLoadError(Exception):
    """The folder does not hold a valid policy set; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = list(problems)
        super().__init__("invalid policies:\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True)
class PolicyBundle:
    """A validated policy set, parsed once. Immutable: a reload builds a new one."""

    directory: Path
    schema: cedarpy.Schema
    policies: cedarpy.PolicySet
    # @id -> file name, in file order
    files: Mapping[str, str]
    effects: Mapping[str, str]
    digest: str
    loaded_at: datetime
    # Every role the policies name (``principal in Role::"department_admin"``, ``resource in
    # Role::"admin"``, ``principal.roles.contains("auditor")``): holding one is a power of
    # its own, beyond the role's permissions.
    named_roles: frozenset[str] = frozenset()

    @property
    def ids(self) -> list[str]:
        return list(self.files)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # The @ids that decided: the permits that allowed, or the forbids that denied. Empty for
    # a deny because nothing permits (Cedar's default deny).
    reasons: list[str]
    errors: list[str] = field(default_factory=list)

    @property
    def word(self) -> str:
        return "allow" if self.allowed else "deny"


class RequestInvalid(ValueError):
    """The request could not be evaluated (unknown action or entity type, wrong context)."""


def _policy_chunks(text: str) -> list[tuple[int, str]]:
    """The text cut before each ``@id(`` annotation, with the line each piece starts on."""
    starts = [m.start() for m in _ID_ANNOTATION.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    chunks = []
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        chunks.append((text.count("\n", 0, begin) + 1, text[begin:end]))
    return chunks


def _syntax_problems(name: str, text: str) -> list[PolicyProblem]:
    """Locate a parse error: parse policy by policy and name the first that fails."""
    problems = []
    for line, chunk in _policy_chunks(text):
        if not chunk.strip() or _only_comments(chunk):
            continue
        try:
            cedarpy.policies_to_json_str(chunk)
        except ValueError as exc:
            match = re.search(r'@id\s*\(\s*"([^"]*)"', chunk)
            policy_id = match.group(1) if match else None
            problems.append(PolicyProblem(name, policy_id, f"line {line}: syntax error: {exc}"))
    return problems or [PolicyProblem(name, None, "syntax error")]


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.strip().startswith("//") for line in chunk.splitlines())


def _load_schema(directory: Path) -> tuple[cedarpy.Schema, str]:
    files = sorted(directory.glob("*.cedarschema"))
    if not files:
        raise PolicyLoadError([PolicyProblem(str(directory), None, "no *.cedarschema file")])
    text = "\n".join(path.read_text(encoding="utf-8") for path in files)
    try:
        return cedarpy.Schema.from_str(text), text
    except ValueError as exc:
        problems = []
        for path in files:  # name the file, when one fails on its own
            try:
                cedarpy.Schema.from_str(path.read_text(encoding="utf-8"))
            except ValueError as alone:
                problems.append(PolicyProblem(path.name, None, f"schema: {alone}"))
        names = ", ".join(path.name for path in files)
        raise PolicyLoadError(problems or [PolicyProblem(names, None, f"schema: {exc}")]) from None


def _file_policies(name: str, text: str, schema: cedarpy.Schema) -> dict[str, Any]:
    """One file's policies, keyed by @id, validated against the schema."""
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError:
        raise PolicyLoadError(_syntax_problems(name, text)) from None
    if parsed.get("templates"):
        raise PolicyLoadError([PolicyProblem(name, None, "templates are not supported")])
    problems: list[PolicyProblem] = []
    policies: dict[str, Any] = {}
    for cedar_id, policy in parsed.get("staticPolicies", {}).items():
        policy_id = policy.get("annotations", {}).get("id")
        if not policy_id:
            problems.append(
                PolicyProblem(name, None, f'{_ordinal(cedar_id)} policy has no @id("...")')
            )
        elif policy_id in policies:
            problems.append(PolicyProblem(name, policy_id, "duplicate @id"))
        else:
            policies[policy_id] = policy
    result = cedarpy.validate_policies(text, schema)
    annotations = result.id_annotations_by_policy_id
    for error in result.errors:
        problems.append(
            PolicyProblem(name, annotations.get(error.policy_id) or None, _tidy(error.error))
        )
    if problems:
        raise PolicyLoadError(problems)
    return policies


def _ordinal(cedar_id: str) -> str:
    number = int(cedar_id.removeprefix("policy")) + 1 if cedar_id[6:].isdigit() else 0
    return f"the {number}{'st' if number == 1 else 'nd' if number == 2 else 'th'}"


def _tidy(message: str) -> str:
    # Cedar names policies by position ("for policy `policy0`, ..."): the @id says it better.
    return re.sub(r"^for policy `policy\d+`, ", "", message)


def load_policies(directory: Path) -> PolicyBundle:
    """Read, validate and parse the folder. Raises :class:`PolicyLoadError`, naming the file
    and the policy id of every problem found."""
    if not directory.is_dir():
        raise PolicyLoadError([PolicyProblem(str(directory), None, "no such directory")])
    schema, schema_text = _load_schema(directory)
    digest = hashlib.sha256(schema_text.encode())
    combined: dict[str, Any] = {}
    files: dict[str, str] = {}
    problems: list[PolicyProblem] = []
    for path in sorted(directory.glob("*.cedar")):
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text.encode())
        try:
            policies = _file_policies(path.name, text, schema)
        except PolicyLoadError as exc:
            problems.extend(exc.problems)
            continue
        for policy_id, policy in policies.items():
            if policy_id in combined:
                problems.append(
                    PolicyProblem(path.name, policy_id, f"@id already used in {files[policy_id]}")
                )
                continue
            combined[policy_id] = policy
            files[policy_id] = path.name
    if problems:
        raise PolicyLoadError(problems)
    document = {"staticPolicies": combined, "templates": {}, "templateLinks": []}
    return PolicyBundle(
        directory=directory,
        schema=schema,
        policies=cedarpy.PolicySet.from_json_str(json.dumps(document)),
        files=files,
        effects={policy_id: policy["effect"] for policy_id, policy in combined.items()},
        digest=digest.hexdigest(),
        loaded_at=datetime.now(UTC),
        named_roles=frozenset(_named_roles(combined)),
    )


def _named_roles(node: Any) -> set[str]:
    """Every name a policy (JSON form) could mean a role by: the ids of ``Role`` entities
    (``principal in Role::"x"``) and every string literal (``principal.roles.contains("x")``
    names a role as a string). Over-inclusive on purpose: a literal that is no role's name
    makes nothing stricter."""
    found: set[str] = set()
    if isinstance(node, dict):
        if node.get("type") == "Role" and isinstance(node.get("id"), str):
            found.add(node["id"])
        if isinstance(node.get("Value"), str):
            found.add(node["Value"])
        for value in node.values():
            found |= _named_roles(value)
    elif isinstance(node, list):
        for value in node:
            found |= _named_roles(value)
    return found


# --- entities and requests -----------------------------------------------------------------


def uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": entity_type, "id": entity_id}


def entity(
    entity_type: str,
    entity_id: str,
    attrs: Mapping[str, Any] | None = None,
    parents: Iterable[dict[str, str]] = (),
) -> dict[str, Any]:
    return {
        "uid": uid(entity_type, entity_id),
        "attrs": dict(attrs or {}),
        "parents": list(parents),
    }


def ip_value(address: str) -> dict[str, Any]:
    return {"__extn": {"fn": "ip", "arg": address}}


def datetime_value(moment: datetime) -> dict[str, Any]:
    text = (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )
    return {"__extn": {"fn": "datetime", "arg": text}}


def request_context(
    ip: str | None,
    trusted_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
    *,
    mfa: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The context authsvc supplies to every decision (``RequestContext`` in the schema)."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        address = ipaddress.ip_address("0.0.0.0")  # unknown: in no trusted network
    trusted = any(address in network for network in trusted_networks)
    return {
        "ip": ip_value(str(address)),
        "trusted_network": trusted,
        "mfa": mfa,
        "now": datetime_value(now or datetime.now(UTC)),
    }


@dataclass(frozen=True)
class CedarRequest:
    principal: dict[str, str]
    action: str
    resource: dict[str, str]
    context: Mapping[str, Any]

    def as_cedar(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "action": uid("Action", self.action)
            if "::" not in self.action
            else _action(self.action),
            "resource": self.resource,
            "context": dict(self.context),
        }


def _action(name: str) -> dict[str, str]:
    # "Orders::Action::\"refund\"" style is not accepted; a namespaced action is "Orders::refund".
    namespace, _, action_id = name.rpartition("::")
    return uid(f"{namespace}::Action", action_id)


def _entities_json(entities: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(entities), separators=(",", ":"))


def _decision(bundle: PolicyBundle, result: cedarpy.AuthzResult) -> Decision:
    reasons = list(result.diagnostics.reasons)
    errors = [_tidy(str(e)) for e in result.diagnostics.errors]
    if result.decision == cedarpy.Decision.NoDecision:
        raise RequestInvalid("; ".join(errors) or "the request could not be evaluated")
    if errors:
        return Decision(False, [], errors)  # fail closed (module docstring)
    return Decision(result.allowed, sorted(reasons, key=bundle.ids.index), [])


def decide(
    bundle: PolicyBundle, request: CedarRequest, entities: Sequence[Mapping[str, Any]]
) -> Decision:
    """Evaluate one request. Raises :class:`RequestInvalid` for a request Cedar cannot
    evaluate against the schema (unknown action, entity type or attribute; bad context)."""
    try:
        result = cedarpy.is_authorized(
            request.as_cedar(), bundle.policies, _entities_json(entities), schema=bundle.schema
        )
    except ValueError as exc:
        raise RequestInvalid(str(exc)) from None
    return _decision(bundle, result)


def check_entities(bundle: PolicyBundle, entities: Sequence[Mapping[str, Any]]) -> None:
    """Raise ``ValueError`` unless the entities conform to the schema."""
    cedarpy.Entities.from_json_str(_entities_json(entities), schema=bundle.schema)
