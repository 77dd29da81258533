"""compose.yaml: bridge, worker and PostgreSQL (and an optional Prometheus), checked as far as
a machine without a Docker engine can (``docker compose config`` is not available here): the
YAML's structure, the files it mounts, and the settings it hands the bridge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_bridge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_bridge_worker_and_database_are_services(compose):
    assert set(compose["services"]) == {"db", "bridge", "worker", "prometheus"}
    always = {n for n, s in compose["services"].items() if "profiles" not in s}
    assert always == {"db", "bridge", "worker"}
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        for other in service.get("depends_on", {}):
            assert other in compose["services"], (name, other)


def test_the_worker_delivers_from_the_bridges_database(compose):
    bridge, worker = compose["services"]["bridge"], compose["services"]["worker"]
    assert worker["image"] == bridge["image"]  # built once, by the bridge service
    url = "FHIR_BRIDGE_DATABASE_URL"
    assert worker["environment"][url] == bridge["environment"][url]
    assert worker["environment"][url].startswith("postgresql")
    assert worker["command"][-1].endswith("exec fhir-bridge worker")
    assert worker["depends_on"]["db"] == {"condition": "service_healthy"}
    assert worker["healthcheck"] == {"disable": True}
    assert "ports" not in worker


def test_named_volumes_are_declared(compose):
    declared = set(compose["volumes"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


def test_the_first_admin_bootstrap_is_documented(compose):
    text = (ROOT / "compose.yaml").read_text()
    assert "fhir-bridge keys generate clinic-admin" in text
    assert "fhir-bridge clients add clinic-admin" in text
    assert "--role admin" in text


def _interpolated(value: str) -> str:
    """``${VAR:-default}`` as compose resolves it with VAR unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_prometheus_is_optional_and_scrapes_the_bridge_with_its_secret(compose):
    prometheus, bridge = compose["services"]["prometheus"], compose["services"]["bridge"]
    assert prometheus["profiles"] == ["monitoring"]
    config_mount = next(v for v in prometheus["volumes"] if v.startswith("./deploy/"))
    source, target = config_mount.split(":")[:2]
    assert (ROOT / source).is_file()
    assert f"--config.file={target}" in prometheus["command"]
    # the bridge reads the token from the secret Prometheus presents
    assert "metrics_token" in prometheus["secrets"]
    assert "metrics_token" in bridge["secrets"]
    assert compose["secrets"]["metrics_token"]["file"] == "./deploy/metrics_token"
    secret_path = "/run/secrets/metrics_token"
    assert bridge["environment"]["FHIR_BRIDGE_METRICS_TOKEN_FILE"] == secret_path
    scrape = yaml.safe_load((ROOT / source).read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": secret_path}
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["bridge"]
    assert sd["port"] == int(bridge["ports"][0].split(":")[-1])
    assert "metrics_token" in (ROOT / "deploy/.gitignore").read_text().split()


def test_the_services_environment_is_valid_settings(compose, tmp_path):
    """What compose hands the bridge and the worker parses (tracing off unless asked)."""
    token = tmp_path / "metrics_token"
    token.write_text("a" * 64 + "\n")
    for name in ("bridge", "worker"):
        given = compose["services"][name]["environment"]
        env = {k: _interpolated(str(v)) for k, v in given.items()}
        if "FHIR_BRIDGE_METRICS_TOKEN_FILE" in env:
            env["FHIR_BRIDGE_METRICS_TOKEN_FILE"] = str(token)
        settings = Settings.from_env(env)
        assert settings.otel is False
        assert env["OTEL_SERVICE_NAME"].startswith("fhir-bridge")
        if name == "bridge":
            assert settings.scrape_token() == "a" * 64
