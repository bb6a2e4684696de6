"""The policy set a process runs with, and the Cedar entities authsvc builds for a decision.

Loaded once at start (an invalid set stops the start). A reload (``POST
/authz/policies/reload`` or SIGHUP) parses and validates a new set in a worker thread, then
swaps one attribute: a request sees the old set or the new one, never a mix. An invalid set is
refused and the old one stays in force.

Several workers: the worker that reloads writes the new set's digest to a marker file in the
data directory (``policies-reloaded``); every worker checks that file once a second and, when
the digest differs from its own, reloads from the policies folder. Workers on several hosts
need the data directory (like the keys) on shared storage, and the same policy files.

A reload asked for (``reload_recorded``: the HTTP route, SIGHUP) is a security event: the
audit trail gets ``POLICY_RELOADED`` with the digests of the new set and of the one it
replaced, and a refused reload too (``after.error``), committed before the refusal is
answered. A worker following another's announcement records nothing: the reload it follows
was recorded where it was asked for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from authsvc.authz.cedar import (
    CedarRequest,
    PolicyBundle,
    PolicyLoadError,
    PolicyProblem,
    RequestInvalid,
    check_entities,
    decide,
    entity,
    load_policies,
    request_context,
    uid,
)
from authsvc.authz.engine import Principal
from authsvc.authz.entities import (
    RESERVED_ATTRIBUTES,
    user_entities,
)
from authsvc.db.models import User
from authsvc.errors import InvalidInput
from authsvc.observability import Metrics
from authsvc.services.audit import POLICY_RELOADED, AuditService

log = logging.getLogger("authsvc.policies")

ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTES_BYTES = 4096

# The actions authsvc's own routes ask about, and the resource type of each: the schema must
# declare them (checked at every load).
AUTHSVC_ACTIONS = {
    "users:read": "User",
    "users:write": "User",
    "users:delete": "User",
    "users:set-attributes": "User",
    "roles:assign": "Role",
    "roles:delete": "Role",
    "audit:read": "AuditLog",
}
AUDIT_LOG_ID = "audit"
POLICY_INVALID = "POLICY_INVALID"
# The audit trail's name for the policy set a deployment runs (one per deployment).
POLICY_SET = ("policy_set", "policies")


def principal_entities(principal: Principal) -> list[dict[str, Any]]:
    """The caller as a ``User`` entity: roles and permissions from the (fresh) token, the
    attributes from the user row read by the guard."""
    assert principal.user_id is not None and principal.email is not None
    return user_entities(
        user_id=principal.user_id,
        email=principal.email,
        is_active=True,
        is_superuser=principal.is_superuser,
        is_verified=principal.is_verified,
        roles=principal.roles,
        permissions=principal.permissions,
        attributes=principal.attributes,
    )


def stored_user_entities(
    user: User, roles: Iterable[str], permissions: Iterable[str]
) -> list[dict[str, Any]]:
    return user_entities(
        user_id=user.id,
        email=user.email,
        is_active=user.is_active,
        is_superuser=user.is_superuser,
        is_verified=user.is_verified,
        roles=roles,
        permissions=permissions,
        attributes=user.attributes or {},
    )


def _probe_user(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return user_entities(
        user_id=uuid.UUID(int=0),
        email="probe@authsvc.invalid",
        is_active=True,
        is_superuser=False,
        is_verified=True,
        roles=["user"],
        permissions=[],
        attributes=attributes,
    )


def verify_bundle(bundle: PolicyBundle) -> None:
    """Refuse a schema that lacks what authsvc's routes ask about, or a ``User`` shaped
    differently from what authsvc builds."""
    probe = _probe_user({})
    context = request_context("127.0.0.1", [])
    problems = []
    for action, resource_type in AUTHSVC_ACTIONS.items():
        resource = uid(resource_type, "probe") if resource_type != "User" else probe[0]["uid"]
        extra = [entity(resource_type, "probe")] if resource_type != "User" else []
        try:
            decide(bundle, CedarRequest(probe[0]["uid"], action, resource, context), probe + extra)
        except RequestInvalid as exc:
            problems.append(
                PolicyProblem("*.cedarschema", None, f"authsvc needs action {action!r}: {exc}")
            )
    if problems:
        raise PolicyLoadError(problems)


def load_verified(directory: Path) -> PolicyBundle:
    bundle = load_policies(directory)
    verify_bundle(bundle)
    return bundle


def validate_attributes(bundle: PolicyBundle, attributes: Mapping[str, Any]) -> None:
    """422 ``USER_ATTRIBUTES_INVALID`` unless ``attributes`` fit the schema's ``User``."""

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(message, code="USER_ATTRIBUTES_INVALID")

    if len(attributes) > MAX_ATTRIBUTES:
        raise refuse(f"At most {MAX_ATTRIBUTES} attributes.")
    if len(json.dumps(attributes)) > MAX_ATTRIBUTES_BYTES:
        raise refuse(f"Attributes take at most {MAX_ATTRIBUTES_BYTES} bytes as JSON.")
    for name in attributes:
        if name in RESERVED_ATTRIBUTES:
            raise refuse(f"{name!r} is set by authsvc, not through attributes.")
        if not ATTRIBUTE_NAME.fullmatch(name):
            raise refuse(f"{name!r} is not an attribute name (lower case letters, digits, _).")
        if attributes[name] is None:
            raise refuse(f"{name!r}: leave an attribute out instead of setting it to null.")
    try:
        check_entities(bundle, _probe_user(attributes))
    except ValueError as exc:
        raise refuse(
            f"The attributes do not fit the policy schema's User entity: {exc}. Declare a new "
            "attribute in policies/*.cedarschema first."
        ) from None


@dataclass(frozen=True)
class Reloaded:
    bundle: PolicyBundle
    previous: str  # the digest of the set it replaced


class PolicyStore:
    def __init__(self, directory: Path, marker: Path, metrics: Metrics | None = None) -> None:
        self.directory = directory
        self.marker = marker
        self.metrics = metrics
        self._bundle = load_verified(directory)  # raises PolicyLoadError: refuse to start
        self._lock = asyncio.Lock()

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    async def reload(self, *, announce: bool = True) -> PolicyBundle:
        """Load and validate the folder off the event loop, then swap. Raises
        :class:`PolicyLoadError` and keeps the current set when the folder is invalid."""
        return (await self.swap(announce=announce)).bundle

    async def swap(self, *, announce: bool = True) -> Reloaded:
        """:meth:`reload`, also telling which set the new one replaced (read under the lock,
        so two reloads at once each name the right one)."""
        async with self._lock:
            previous = self._bundle.digest
            try:
                bundle = await anyio.to_thread.run_sync(load_verified, self.directory)
            except PolicyLoadError as exc:
                self._count("refused")
                log.error("policy reload refused; the loaded set stays in force: %s", exc)
                raise
            self._bundle = bundle
            self._count("loaded")
            log.info(
                "policies loaded",
                extra={"policies": len(bundle.files), "digest": bundle.digest[:12]},
            )
            if announce:
                await anyio.to_thread.run_sync(self._announce, bundle)
            return Reloaded(bundle, previous)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.policy_reloads.labels(outcome).inc()

    def _announce(self, bundle: PolicyBundle) -> None:
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.marker.with_name(f".{self.marker.name}.{os.getpid()}")
        scratch.write_text(
            json.dumps({"digest": bundle.digest, "at": datetime.now(UTC).isoformat()}),
            encoding="utf-8",
        )
        scratch.replace(self.marker)  # atomic: readers see the old file or the new one

    def announced_digest(self) -> str | None:
        try:
            digest = json.loads(self.marker.read_text(encoding="utf-8")).get("digest")
        except (OSError, ValueError, AttributeError):
            return None
        return digest if isinstance(digest, str) else None

    async def follow(self, interval: float = 1.0) -> None:
        """Run for the life of the process: when the marker announces a set that differs from
        ours, reload. What the marker said before this process started is not news: the process
        loaded the files at start."""
        seen = await anyio.to_thread.run_sync(self.announced_digest)
        while True:
            await asyncio.sleep(interval)
            digest = await anyio.to_thread.run_sync(self.announced_digest)
            if digest is None or digest == seen:
                continue
            seen = digest
            if digest == self._bundle.digest:
                continue  # our own announcement, or a set we already run
            try:
                await self.reload(announce=False)
            except PolicyLoadError:
                continue  # logged; the loaded set stays
            if self._bundle.digest != digest:
                log.warning(
                    "the policy files here differ from the set another worker announced",
                    extra={"announced": digest[:12], "loaded": self._bundle.digest[:12]},
                )


async def reload_recorded(store: PolicyStore, audit: AuditService) -> PolicyBundle:
    """Reload ``store`` and record it in the caller's transaction, committed here; a refused
    reload is recorded and committed too, then :class:`PolicyLoadError` goes on. The swap
    happens first (an event needs the new digest): should the commit fail, the new set is in
    force all the same, like after any reload."""
    try:
        done = await store.swap()
    except PolicyLoadError as exc:
        after: dict[str, Any] = {
            "error": POLICY_INVALID,
            "in_force": store.bundle.digest,
            "problems": len(exc.problems),
        }
        audit.record(POLICY_RELOADED, *POLICY_SET, None, after)
        await audit.db.commit()
        raise
    bundle = done.bundle
    after = {"digest": bundle.digest, "previous": done.previous, "policies": len(bundle.ids)}
    audit.record(POLICY_RELOADED, *POLICY_SET, None, after)
    await audit.db.commit()
    return bundle
