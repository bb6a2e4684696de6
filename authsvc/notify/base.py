"""The notifier seam: how verification, password-reset and email-change messages reach users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

# "email-changed" goes to the address an account had before its email changed; its token (when
# there is one) undoes the change through POST /auth/revert-email. "confirm-email" goes to the
# address a user asked to move to; its token makes the move (POST /auth/confirm-email).
# "register-attempt" goes to the owner of an address someone tried to register again: no token.
# "login-throttled" tells an account's owner that sign-ins to it are being held back (no token).
# "mfa-reset" tells an account's owner that an administrator removed its second factor (no token).
Purpose = Literal[
    "verify",
    "reset-password",
    "email-changed",
    "confirm-email",
    "register-attempt",
    "login-throttled",
    "mfa-reset",
]

SUBJECTS: dict[Purpose, str] = {
    "verify": "Verify your email address",
    "reset-password": "Reset your password",
    "email-changed": "Your email address was changed",
    "confirm-email": "Confirm your new email address",
    "register-attempt": "Someone tried to register with your address",
    "login-throttled": "Sign-in attempts on your account",
    "mfa-reset": "The second factor of your account was removed",
}
_LINK_PATHS: dict[Purpose, str] = {
    "verify": "verify",
    "reset-password": "reset-password",
    "email-changed": "revert-email",
    "confirm-email": "confirm-email",
    "register-attempt": "forgot-password",
}
_ACTIONS: dict[Purpose, str] = {
    "verify": "verify your email address",
    "reset-password": "reset your password",
    "confirm-email": "make this address the one of your account",
}


@dataclass(frozen=True)
class TokenMessage:
    to: str
    purpose: Purpose
    # None for a notice that carries no token: a "register-attempt", or an "email-changed"
    # notice that offers no way back (an administrator's change).
    token: str | None
    link: str | None

    @property
    def subject(self) -> str:
        return SUBJECTS[self.purpose]

    def body(self) -> str:
        if self.purpose == "email-changed":
            return self._email_changed_body()
        if self.purpose == "register-attempt":
            return self._register_attempt_body()
        if self.purpose == "login-throttled":
            return _LOGIN_THROTTLED_BODY
        if self.purpose == "mfa-reset":
            return _MFA_RESET_BODY
        lines = [f"Use this token to {_ACTIONS[self.purpose]}:", "", str(self.token), ""]
        if self.link:
            lines += ["Or open:", self.link, ""]
        lines.append("If you did not ask for this, ignore this message.")
        return "\n".join(lines)

    def _register_attempt_body(self) -> str:
        # The registration answered as it does for a new address; only this mailbox learns
        # that the address is taken.
        lines = [
            "Someone asked to register a new account with this address, which already has an",
            "account. Nothing was changed and no new account was made.",
            "",
            "If it was you: sign in with your password, or ask for a password reset if you",
            "forgot it.",
        ]
        if self.link:
            lines += ["", "To reset your password, open:", self.link]
        lines += ["", "If it was not you, ignore this message."]
        return "\n".join(lines)

    def _email_changed_body(self) -> str:
        # The new address is left out: this mailbox may no longer be the account owner's.
        lines = ["The email address of your account was changed; this address is no longer it.", ""]
        if self.token is None:
            lines.append(
                "The change was made by an administrator. If you did not expect it, contact them."
            )
            return "\n".join(lines)
        lines += [
            "If you did not make this change, someone else may hold your account. To undo it",
            "(this address comes back and every session of the account ends), use this token:",
            "",
            self.token,
            "",
        ]
        if self.link:
            lines += ["Or open:", self.link, ""]
        lines.append("Then choose a new password. If you made the change, ignore this message.")
        return "\n".join(lines)


_LOGIN_THROTTLED_BODY = "\n".join(
    [
        "Several sign-ins to your account failed in a row, so new sign-in attempts are now",
        "slowed down, from every network. Your account is not locked for you: devices you",
        "signed in from before still get in.",
        "",
        "If it was you, wait a little and try again, or reset your password.",
        "If it was not you, someone may be guessing your password: choose a long password",
        "you use nowhere else (reset it from the sign-in page).",
    ]
)

# No link and no token: a message anyone could fake should ask for nothing but a word with
# the administrators, through a channel the owner already knows.
_MFA_RESET_BODY = "\n".join(
    [
        "An administrator removed the second factor of your account: its authenticator app",
        "and its recovery codes no longer work. Until you set up a new one, your password",
        "alone signs you in.",
        "",
        "If you did not ask for it, contact them: someone may be trying to take over your",
        "account.",
    ]
)


class Notifier(Protocol):
    async def send(self, message: TokenMessage) -> None: ...


def build_link(public_url: str | None, purpose: Purpose, token: str | None) -> str | None:
    """The page a message points at; with no token (a notice), the page alone."""
    if not public_url:
        return None
    page = f"{public_url.rstrip('/')}/{_LINK_PATHS[purpose]}"
    return f"{page}?token={token}" if token else page
