"""Metrics (Prometheus) and request ids for logs.

Each app has its own registry (tests build many apps). With several uvicorn workers each worker
exposes its own counters: scrape every worker, or sum them in Prometheus.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# The client's User-Agent, for the security trail (the column holds 256 characters).
user_agent_var: ContextVar[str | None] = ContextVar("user_agent", default=None)
USER_AGENT_MAX = 256
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "authsvc_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "authsvc_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.logins = Counter(
            "authsvc_logins", "Password sign-ins by outcome", ["outcome"], registry=self.registry
        )
        self.rate_limited = Counter(
            "authsvc_rate_limit_rejections", "Requests refused by a rate limit", ["rule"],
            registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "authsvc_tokens_issued", "Access tokens issued by grant", ["grant"],
            registry=self.registry,
        )  # fmt: skip
        self.policy_decisions = Counter(
            "authsvc_policy_decisions", "Cedar policy decisions by outcome and where asked",
            ["decision", "source"], registry=self.registry,
        )  # fmt: skip
        self.policy_latency = Histogram(
            "authsvc_policy_decision_seconds", "Time to build the entities and decide",
            ["source"], registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
        )  # fmt: skip
        self.policy_reloads = Counter(
            "authsvc_policy_reloads", "Policy set reloads by outcome", ["outcome"],
            registry=self.registry,
        )  # fmt: skip


class RequestContext:
    """Request id (from ``X-Request-ID`` when sane, else new), echoed back; request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        ua_token = user_agent_var.set(_user_agent(headers.get(b"user-agent")))
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
            request_id_var.reset(token)
            user_agent_var.reset(ua_token)


def _user_agent(raw: bytes | None) -> str | None:
    """Anybody's text: control characters (a NUL would stop PostgreSQL) dropped, length cut."""
    if not raw:
        return None
    text = "".join(c for c in raw.decode("latin-1") if c.isprintable())
    return text[:USER_AGENT_MAX] or None


def route_template(scope: Scope) -> str:
    """The matched route as a template (``/users/{user_id}``): a bounded metrics label.

    Built from the request path with the path parameters put back, so it holds for routes in
    included routers too; ``unmatched`` for 404s, whose paths are anybody's to invent.
    """
    if scope.get("route") is None:
        return "unmatched"
    params: dict[str, Any] = scope.get("path_params") or {}
    by_value = {str(value): name for name, value in params.items()}
    segments = [
        f"{{{by_value[segment]}}}" if segment in by_value else segment
        for segment in str(scope.get("path", "")).split("/")
    ]
    return "/".join(segments)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):  # services/audit_chain.py: one event's fields
            entry.update(audit)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
