"""Step-up: telling a caller that a second factor, or a fresh sign-in, would let them through.

Two refusals, both 403, each with its own stable code so a client knows what to do next:

- ``MFA_REQUIRED``: a role the caller holds would grant what they asked for, but it needs a
  session signed in with a second factor (``AUTHSVC_MFA_REQUIRED_ROLES``, ``services.claims``),
  or a policy forbids the action without one (the shipped ``guardrail.destructive-needs-mfa``).
- ``REAUTH_REQUIRED``: the action needs a sign-in at most ``AUTHSVC_REAUTH_MAX_AGE_SECONDS``
  old (the token's ``auth_time``, OpenID Connect Core §2); sign in again.

Pure: no I/O, no FastAPI (``api.guards`` wires them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authsvc.authz.engine import Principal
from authsvc.errors import Forbidden

MFA_REQUIRED = "MFA_REQUIRED"
REAUTH_REQUIRED = "REAUTH_REQUIRED"


def mfa_required(message: str, **data: Any) -> Forbidden:
    return Forbidden(
        f"{message} Sign in with a second factor (MFA) for this.", code=MFA_REQUIRED, data=data
    )


def missing_permissions(principal: Principal, missing: Sequence[str]) -> Forbidden:
    """The 403 for permissions the caller lacks: ``MFA_REQUIRED`` when a role they hold would
    grant one of them with a second factor, else ``PERMISSION_DENIED``."""
    if any(principal.needs_mfa_for(permission) for permission in missing):
        return mfa_required(
            f"Permission {missing[0]!r} comes from a role that needs a second factor.",
            missing=list(missing),
            mfa_roles=sorted(principal.withheld_roles),
        )
    return Forbidden(
        f"Permission {missing[0]!r} is required.",
        code="PERMISSION_DENIED",
        data={"missing": list(missing)},
    )


def missing_roles(principal: Principal, missing: Sequence[str]) -> Forbidden:
    """The 403 for roles the caller lacks (``require_roles``), like
    :func:`missing_permissions`."""
    if any(role in principal.withheld_roles for role in missing):
        return mfa_required(
            f"Role {missing[0]!r} needs a second factor.", missing_roles=list(missing)
        )
    return Forbidden(
        f"Role {missing[0]!r} is required.",
        code="PERMISSION_DENIED",
        data={"missing_roles": list(missing)},
    )


def changes_credentials(password: str | None, email: str | None, current_email: str) -> bool:
    """A new password, or a move to another address: what needs a recent sign-in on one's
    own account. Sending the current address (which withdraws a pending change) moves
    nothing, so it is not held back."""
    if password is not None:
        return True
    return email is not None and email.lower() != current_email.lower()


def require_recent_auth(principal: Principal, max_age_seconds: int, now: float) -> None:
    """403 ``REAUTH_REQUIRED`` unless the caller signed in at most ``max_age_seconds`` before
    ``now`` (seconds since the epoch). A token without ``auth_time`` (issued before tokens
    carried it) is not recent. A refresh keeps the session's ``auth_time``: only a new
    sign-in makes it recent again."""
    signed_in = principal.auth_time
    if signed_in is not None and now - signed_in <= max_age_seconds:
        return
    raise Forbidden(
        "This needs a recent sign-in: sign in again, then retry.",
        code=REAUTH_REQUIRED,
        data={"max_age_seconds": max_age_seconds},
    )
