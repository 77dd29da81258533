"""compose.yaml: bridge, worker and PostgreSQL, checked as far as a machine without a Docker
engine can (``docker compose config`` is not available here): the YAML's structure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_bridge_worker_and_database_are_services(compose):
    assert set(compose["services"]) == {"db", "bridge", "worker"}
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
