"""The README's route table, generated from the app's OpenAPI document so it cannot drift.

``authsvc routes`` prints it; a test compares it with README.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_METHODS = ("get", "post", "put", "patch", "delete")


def _guard(operation: dict[str, Any]) -> str:
    action = operation.get("x-authsvc-policy-action")
    if action:
        return f"policy `{action}`"
    requirements = operation.get("security")
    if not requirements:
        return "public"
    scopes = sorted({scope for requirement in requirements for s in requirement.values()
                     for scope in s})  # fmt: skip
    if not scopes:
        return "any signed-in user"
    return ", ".join(f"`{scope}`" for scope in scopes)


def render_routes_table(app: FastAPI) -> str:
    lines = ["| method | path | permission | summary |", "|---|---|---|---|"]
    for path, item in app.openapi()["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            summary = str(operation.get("summary", "")).replace("|", "\\|")
            lines.append(f"| {method.upper()} | `{path}` | {_guard(operation)} | {summary} |")
    return "\n".join(lines) + "\n"
