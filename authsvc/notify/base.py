"""The notifier seam: how verification and password-reset tokens reach the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Purpose = Literal["verify", "reset-password"]


@dataclass(frozen=True)
class TokenMessage:
    to: str
    purpose: Purpose
    token: str
    link: str | None

    @property
    def subject(self) -> str:
        if self.purpose == "verify":
            return "Verify your email address"
        return "Reset your password"

    def body(self) -> str:
        action = "verify your email address" if self.purpose == "verify" else "reset your password"
        lines = [f"Use this token to {action}:", "", self.token, ""]
        if self.link:
            lines += ["Or open:", self.link, ""]
        lines.append("If you did not ask for this, ignore this message.")
        return "\n".join(lines)


class Notifier(Protocol):
    async def send(self, message: TokenMessage) -> None: ...


def build_link(public_url: str | None, purpose: Purpose, token: str) -> str | None:
    if not public_url:
        return None
    path = "verify" if purpose == "verify" else "reset-password"
    return f"{public_url.rstrip('/')}/{path}?token={token}"
