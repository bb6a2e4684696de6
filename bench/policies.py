"""Per-decision latency of the shipped Cedar policy set (``policies/``), three ways in one run.

1. Raw cedarpy, the floor: ``cedarpy.is_authorized`` with the bundle's pre-parsed policy set and
   schema handles, on a request and an entities JSON string built once. Alongside, raw cedarpy
   given the policy and schema *text* on every call, which is what parsing once saves.
2. The dependency path: ``authsvc.services.decisions.evaluate``, what ``authorize(...)`` calls
   for every request once the principal and the resource are loaded. It builds the context
   (client IP, trusted network, time), the principal's entities, merges them with the
   resource's, calls Cedar, maps the result and counts it in the metrics. Same decision as 1: a
   ``department_admin`` of ``sales`` may ``users:write`` another ``sales`` user
   (``users.department-admin``).
3. The decision API: ``POST /authz/check`` in-process (httpx ASGITransport, no sockets) on
   SQLite with a real user and a bearer token, asking ``users:read`` on themself
   (``users.own-profile``); and ``POST /authz/check/batch`` with 100 such checks, per decision.

Every call is timed with ``time.perf_counter_ns`` after a warm-up; the floor and the dependency
path, and the two routes of 3, are called in turn (interleaved), so they see the same machine
conditions (the text-parsing line runs on its own: it leaves the caches cold for the next call).
Every answer is checked to be the expected allow, so a misconfiguration cannot produce
meaningless numbers. Prints the median and p99 per decision in microseconds and the ratio of
each median to raw cedarpy's. The API's decision differs from 1 and 2 (without ``authz:check``
a caller asks only about themself); with two entities instead of four it costs raw cedarpy about
0.8x as much, so the ratios of the API rows understate its overhead a little.

    python bench/policies.py [--iterations 2000] [--api-iterations 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import cedarpy
import httpx

from authsvc.authz.cedar import CedarRequest, Decision, request_context, uid
from authsvc.authz.engine import Principal
from authsvc.authz.entities import merge_entities, user_entities
from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.main import create_app, start_up
from authsvc.services.container import AppServices
from authsvc.services.decisions import Target, evaluate
from authsvc.services.policies import principal_entities

PASSWORD = "bench passphrase that is long"
CLIENT_IP = "127.0.0.1"
WARMUP, API_WARMUP = 200, 50
BATCH = 100  # MAX_BATCH of the decision API
FLOOR = "raw cedarpy, parsed handles (floor)"

R = TypeVar("R")
Samples = dict[str, list[float]]  # microseconds per decision, by path


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Case(NamedTuple, Generic[R]):
    """A path to time: ``call`` makes ``per`` decisions, ``check`` asserts they are right."""

    call: Callable[[], R]
    check: Callable[[Any], None]
    per: int = 1


def measure(iterations: int, warmup: int, cases: dict[str, Case[Any]]) -> Samples:
    """Microseconds per decision of each case, calling the cases in turn (interleaved, so all
    see the same machine conditions), after ``warmup`` rounds."""
    samples: Samples = {name: [] for name in cases}
    for i in range(warmup + iterations):
        for name, case in cases.items():
            start = time.perf_counter_ns()
            result = case.call()
            elapsed = time.perf_counter_ns() - start
            case.check(result)
            if i >= warmup:
                samples[name].append(elapsed / 1000 / case.per)
    return samples


async def measure_async(
    iterations: int, warmup: int, cases: dict[str, Case[Awaitable[Any]]]
) -> Samples:
    """:func:`measure` for cases whose ``call`` is a coroutine function."""
    samples: Samples = {name: [] for name in cases}
    for i in range(warmup + iterations):
        for name, case in cases.items():
            start = time.perf_counter_ns()
            result = await case.call()
            elapsed = time.perf_counter_ns() - start
            case.check(result)
            if i >= warmup:
                samples[name].append(elapsed / 1000 / case.per)
    return samples


def department_admin_case() -> tuple[Principal, Target]:
    """A department admin of sales, and another user of sales as the resource."""
    principal = Principal(
        user_id=uuid.uuid4(),
        email="admin@example.com",
        roles=frozenset({"department_admin", "user"}),
        permissions=frozenset(),
        attributes={"department": "sales"},
        is_verified=True,
    )
    other = uuid.uuid4()
    entities = user_entities(
        user_id=other, email="other@example.com", is_active=True, is_superuser=False,
        is_verified=True, roles=["user"], permissions=[], attributes={"department": "sales"},
    )  # fmt: skip
    return principal, Target(uid("User", str(other)), entities)


def text_ids(policy_text: str) -> dict[str, str]:
    """Cedar's positional ids (``policy0``...) of the policies in ``policy_text`` -> @id."""
    parsed = json.loads(cedarpy.policies_to_json_str(policy_text))["staticPolicies"]
    return {cedar_id: policy["annotations"]["id"] for cedar_id, policy in parsed.items()}


def in_process(services: AppServices, iterations: int) -> tuple[Samples, Samples]:
    """Paths 1 and 2, on the same decision; and raw cedarpy re-parsing the text."""
    bundle = services.policies.bundle
    principal, target = department_admin_case()
    action, expected = "users:write", ["users.department-admin"]

    # What evaluate() would hand to Cedar, built once.
    context = request_context(CLIENT_IP, services.settings.trusted_networks, mfa=principal.mfa)
    request = CedarRequest(uid("User", str(principal.user_id)), action, target.uid, context)
    cedar_request = request.as_cedar()
    entities = merge_entities(principal_entities(principal), target.entities)
    entities_json = json.dumps(entities, separators=(",", ":"))
    policy_text = "\n".join(p.read_text("utf-8") for p in sorted(bundle.directory.glob("*.cedar")))
    schema_text = "\n".join(
        p.read_text("utf-8") for p in sorted(bundle.directory.glob("*.cedarschema"))
    )
    positional = text_ids(policy_text)

    def raw() -> cedarpy.AuthzResult:
        return cedarpy.is_authorized(
            cedar_request, bundle.policies, entities_json, schema=bundle.schema
        )

    def raw_text() -> cedarpy.AuthzResult:
        return cedarpy.is_authorized(cedar_request, policy_text, entities_json, schema=schema_text)

    def dependency() -> Decision:
        return evaluate(services, principal, action, target, CLIENT_IP)

    def check_raw(result: cedarpy.AuthzResult) -> None:
        assert result.allowed and not result.diagnostics.errors, result.diagnostics.errors
        assert sorted(result.diagnostics.reasons) == expected, result.diagnostics.reasons

    def check_text(result: cedarpy.AuthzResult) -> None:
        assert result.allowed and not result.diagnostics.errors, result.diagnostics.errors
        assert [positional[r] for r in result.diagnostics.reasons] == expected

    def check_decision(decision: Decision) -> None:
        assert decision.allowed and decision.reasons == expected, decision

    # Parsing the text leaves the caches cold for whatever runs next, so it gets a round of its
    # own after the two that are compared.
    compared: dict[str, Case[Any]] = {
        FLOOR: Case(raw, check_raw),
        "deps.evaluate (authorize dependency)": Case(dependency, check_decision),
    }
    reparsing = {"raw cedarpy, re-parsing the text": Case(raw_text, check_text)}
    return measure(iterations, WARMUP, compared), measure(iterations, WARMUP, reparsing)


async def over_http(app: Any, iterations: int) -> Samples:
    """Path 3: the decision API, one check and a batch of 100, as a signed-in user."""
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        registered = await client.post(
            "/auth/register", json={"email": "bench@example.com", "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        login = {"grant_type": "password", "username": "bench@example.com", "password": PASSWORD}
        token = (await client.post("/auth/token", data=login)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        one = {
            "principal": None,
            "action": "users:read",
            "resource": {"type": "User", "id": registered.json()["id"]},
        }
        batch = {"checks": [one] * BATCH}

        def allowed(result: dict[str, Any]) -> bool:
            return result["decision"] == "allow" and "users.own-profile" in result["reasons"]

        def check_one(response: httpx.Response) -> None:
            assert response.status_code == 200 and allowed(response.json()), response.text

        def check_batch(response: httpx.Response) -> None:
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert len(results) == BATCH and all(map(allowed, results)), response.text

        async def single() -> httpx.Response:
            return await client.post("/authz/check", json=one, headers=headers)

        async def batched() -> httpx.Response:
            return await client.post("/authz/check/batch", json=batch, headers=headers)

        cases: dict[str, Case[Awaitable[Any]]] = {
            "POST /authz/check": Case(single, check_one),
            f"POST /authz/check/batch, per check of {BATCH}": Case(batched, check_batch, BATCH),
        }
        return await measure_async(iterations, API_WARMUP, cases)


async def run(iterations: int, api_iterations: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,
            data_dir=Path(folder),
            migrate_on_start=False,
            ratelimit_enabled=False,
            bcrypt_rounds=4,
            require_verified_email=False,  # 201 with the user's id, and sign-in at once
        )
        await asyncio.to_thread(migrations.upgrade, settings.resolved_database_url)
        app = create_app(settings)
        services: AppServices = app.state.services
        await start_up(services)
        compared, reparsing = in_process(services, iterations)
        results = compared | await over_http(app, api_iterations) | reparsing
        await services.engine.dispose()

    floor = statistics.median(results[FLOOR])
    print(
        f"policy decisions: {len(services.policies.bundle.ids)} policies, {iterations} "
        f"iterations in process, {api_iterations} over the API, after warm-up"
    )
    print(f"{'path':<44}{'median µs':>11}{'p99 µs':>11}{'ratio':>9}")
    for name, samples in results.items():
        median = statistics.median(samples)
        p99 = percentile(samples, 0.99)
        print(f"{name:<44}{median:>11.1f}{p99:>11.1f}{median / floor:>8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000, help="in-process paths")
    parser.add_argument("--api-iterations", type=int, default=500, help="HTTP paths")
    args = parser.parse_args()
    asyncio.run(run(args.iterations, args.api_iterations))


if __name__ == "__main__":
    main()
