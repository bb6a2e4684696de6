"""The notifier seam: how verification, password-reset and email-change messages reach users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

# "email-changed" goes to the address an account had before its email changed; its token (when
# there is one) undoes the change through POST /auth/revert-email.
# "login-throttled" tells an account's owner that sign-ins to it are being held back (no token).
Purpose = Literal["verify", "reset-password", "email-changed", "login-throttled"]

SUBJECTS: dict[Purpose, str] = {
    "verify": "Verify your email address",
    "reset-password": "Reset your password",
    "email-changed": "Your email address was changed",
    "login-throttled": "Sign-in attempts on your account",
}
_LINK_PATHS: dict[Purpose, str] = {
    "verify": "verify",
    "reset-password": "reset-password",
    "email-changed": "revert-email",
}


@dataclass(frozen=True)
class TokenMessage:
    to: str
    purpose: Purpose
    # None only for an "email-changed" notice that offers no way back (an administrator's change).
    token: str | None
    link: str | None

    @property
    def subject(self) -> str:
        return SUBJECTS[self.purpose]

    def body(self) -> str:
        if self.purpose == "email-changed":
            return self._email_changed_body()
        if self.purpose == "login-throttled":
            return _LOGIN_THROTTLED_BODY
        action = "verify your email address" if self.purpose == "verify" else "reset your password"
        lines = [f"Use this token to {action}:", "", str(self.token), ""]
        if self.link:
            lines += ["Or open:", self.link, ""]
        lines.append("If you did not ask for this, ignore this message.")
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


class Notifier(Protocol):
    async def send(self, message: TokenMessage) -> None: ...


def build_link(public_url: str | None, purpose: Purpose, token: str) -> str | None:
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/{_LINK_PATHS[purpose]}?token={token}"
