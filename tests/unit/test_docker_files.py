"""What can be checked in docker/ without a Docker engine (none runs on our machines)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from authsvc.cli import build_parser
from authsvc.config import Settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def final_stage(dockerfile: str) -> str:
    return dockerfile.rsplit("\nFROM ", 1)[1]


def test_compose_has_the_services_and_wires_them() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "authsvc", "nginx"}
    app = services["authsvc"]
    assert app["deploy"]["replicas"] >= 2
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = app["environment"]
    assert env["AUTHSVC_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["AUTHSVC_RATELIMIT_STORAGE_URI"].startswith("redis://redis:")
    nginx_ip = services["nginx"]["networks"]["backend"]["ipv4_address"]
    assert env["AUTHSVC_TRUSTED_PROXIES"] == nginx_ip  # only the proxy may forward addresses
    assert "state:/data" in app["volumes"]  # replicas share the keys and the policy marker


def test_compose_settings_exist_and_secrets_come_from_the_environment() -> None:
    env = compose()["services"]["authsvc"]["environment"]
    known = {f"AUTHSVC_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    for secret in ("AUTHSVC_TOKEN_SECRET", "AUTHSVC_SMTP_PASSWORD", "AUTHSVC_KEY_ENCRYPTION_KEY"):
        assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", env[secret]), secret
    assert env["AUTHSVC_TOKEN_SECRET"].startswith("${AUTHSVC_TOKEN_SECRET:?")


def test_commands_are_real_cli_commands() -> None:
    services = compose()["services"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd
    import json

    for command in (json.loads(cmd.group(1)), services["migrate"]["command"]):
        assert command[0] == "authsvc"
        build_parser().parse_args(command[1:])  # exits (fails the test) if not a real command
    assert json.loads(cmd.group(1))[1:4] == ["serve", "--host", "0.0.0.0"]


def test_dockerfile_final_image() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS build$", dockerfile, re.M)
    # The wheel carries the migrations and the shipped policies (pyproject force-include).
    assert "COPY alembic ./alembic" in dockerfile and "COPY policies ./policies" in dockerfile
    final = final_stage(dockerfile)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert re.search(r"^USER (?!root)\w+$", final, re.M)
    assert "HEALTHCHECK" in final and "/healthz" in final
    for build_tool in ("build-essential", "gcc", "apt-get install"):
        assert build_tool not in final
    for secret in ("TOKEN_SECRET", "SMTP_PASSWORD", "KEY_ENCRYPTION_KEY"):
        assert secret not in "\n".join(
            line for line in final.splitlines() if not line.startswith("#")
        )


def test_nginx_forwards_the_client_address_to_authsvc() -> None:
    conf = (DOCKER / "nginx.conf").read_text()
    assert "server authsvc:8000;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "proxy_pass http://authsvc;" in conf


def test_readme_uses_the_compose_file() -> None:
    readme = (DOCKER.parent / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml up --build" in readme
