"""Walking the OpenAPI document: its operations, paths with their parameters filled in, and
whether an answer matches what its operation documents.

Shared by the tests that read the document (test_openapi_conformance.py) and those that call
every operation in it (test_one_way_in.py, test_request_counts.py).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import jsonschema_rs  # schemathesis' validator; OpenAPI 3.1 schemas are JSON Schema 2020-12
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr
from starlette.routing import Mount

from authsvc.config import Settings
from authsvc.main import create_app

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PARAMETER = re.compile(r"\{([^}]+)\}")


class Operation(NamedTuple):
    method: str  # upper case
    path: str  # as documented, with {parameters}
    spec: dict[str, Any]

    @property
    def guarded(self) -> bool:
        """Documented as needing a bearer token (an OpenAPI security requirement)."""
        return bool(self.spec.get("security"))

    @property
    def has_body(self) -> bool:
        return "requestBody" in self.spec

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


async def fetch_document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def responses(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    answers: dict[str, Any] = document["paths"][path][method.lower()]["responses"]
    return answers


@cache
def document_only() -> dict[str, Any]:
    """The OpenAPI document of an app built only for it (no database is touched): for
    parametrising tests at collection time."""
    scratch = Path(tempfile.mkdtemp(prefix="authsvc-openapi-"))
    app = create_app(
        Settings(
            _env_file=None,
            data_dir=scratch,
            database_url=f"sqlite+aiosqlite:///{scratch / 'unused.db'}",
            token_secret=SecretStr("openapi-only-" + "x" * 40),
        )
    )
    return app.openapi()


def operations(document: Mapping[str, Any]) -> list[Operation]:
    return [
        Operation(method.upper(), path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if method.upper() in METHODS
    ]


def fill(path: str, values: Mapping[str, str]) -> str:
    """The path with each ``{parameter}`` replaced by ``values[parameter]``."""
    return _PARAMETER.sub(lambda match: values[match.group(1)], path)


def undocumented_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route left out of the document; a mount counts as ``("*", path)``."""
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.router.routes):
        if isinstance(route.original_route, Mount):
            found.add(("*", str(route.path)))
            continue
        if route.include_in_schema or not route.path_format:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path_format))
    return found


def body_schema(document: dict[str, Any], operation: Operation, status: int) -> Any:
    """The JSON schema documented for ``status``; ``None`` if the status is documented with
    no JSON body; ``KeyError`` if the status is not documented at all."""
    answer = operation.spec["responses"][str(status)]
    content = answer.get("content", {})
    media = content.get("application/json")
    return None if media is None else media.get("schema", {})


def schema_problems(document: dict[str, Any], schema: dict[str, Any], body: Any) -> list[str]:
    """Why ``body`` does not validate against ``schema`` (its ``$ref``s resolved against the
    document's components); empty when it does."""
    rooted = {**schema, "components": document.get("components", {})}
    validator = jsonschema_rs.Draft202012Validator(rooted)
    return [error.message for error in validator.iter_errors(body)]


def error_answer_problem(
    document: dict[str, Any], operation: Operation, response: httpx.Response
) -> str | None:
    """For a 4xx answer: why it is not what the operation documents, else ``None``."""
    status = response.status_code
    if str(status) not in operation.spec["responses"]:
        documented = sorted(operation.spec["responses"])
        return f"{status} is not documented (documented: {documented})"
    try:
        body = response.json()
    except json.JSONDecodeError:
        return f"{status} answered a body that is not JSON: {response.text[:80]!r}"
    schema = body_schema(document, operation, status)
    if schema is None:
        return f"{status} is documented without a JSON schema; the answer was {body}"
    problems = schema_problems(document, schema, body)
    if problems:
        return f"{status} body {body} does not match its schema: {problems[0]}"
    return None
