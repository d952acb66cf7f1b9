"""Docker files stay consistent with the Makefile and the CLI (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _salesfc_args(command: list[str]) -> list[list[str]]:
    """The salesfc invocations inside a compose command (direct or in a shell loop)."""
    if command[0] == "salesfc":
        return [command[1:]]
    return [m.split() for m in re.findall(r"salesfc ([a-z][a-z -]*[a-z])", " ".join(command))]


def test_services_and_order(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "api", "nightly"}
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "nightly"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )


def test_commands_are_real_cli_commands(compose: dict) -> None:
    runner = CliRunner()
    seen = set()
    for name in ("migrate", "api", "nightly"):
        for args in _salesfc_args(compose["services"][name]["command"]):
            words = [a for a in args if not a.startswith("-") and not a[0].isdigit()]
            words = [w for w in words if w not in {"0.0.0.0"}]
            result = runner.invoke(cli, [*words, "--help"])
            assert result.exit_code == 0, (name, args, result.output)
            seen.add(" ".join(words))
    assert seen == {"db upgrade", "serve", "forecast-all"}


def test_compose_commands_match_makefile(compose: dict) -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "salesfc db upgrade" in makefile
    assert compose["services"]["migrate"]["command"] == ["salesfc", "db", "upgrade"]
    assert "$(BIN)/salesfc serve" in makefile
    assert compose["services"]["api"]["command"][:2] == ["salesfc", "serve"]


def test_compose_uses_postgres_with_psycopg(compose: dict) -> None:
    env = compose["x-salesfc"]["environment"]
    assert env["SALESFC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["SALESFC_DATABASE_URL"]


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.search(r"^USER (\S+)", text, re.M)
    assert user and user.group(1) not in {"root", "0"}
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'CMD ["salesfc", "serve"]' in text
    for path in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / path).exists(), path
