"""Every line a served bridge writes is JSON with a zone-aware time: gunicorn's own lines too."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import requests

from tests.conftest import provision_database
from tests.support.served import served_bridge

pytestmark = pytest.mark.interop


def test_gunicorn_and_app_lines_are_json_with_a_zone(tmp_path, tmp_path_factory):
    log = tmp_path / "bridge.log"
    with (
        provision_database("sqlite", tmp_path_factory) as url,
        served_bridge(url, log=log, FHIR_BRIDGE_LOG_LEVEL="INFO") as base,
    ):
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        search = f"{base}/fhir/Patient?identifier=https://clinic.example.org/fhir/mrn|P-1001"
        assert requests.get(search, timeout=5).status_code == 401
    assert "P-1001" not in log.read_text()  # no line quotes a query string
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {line["logger"] for line in lines} >= {"gunicorn.error", "fhir_bridge.access"}
    for line in lines:
        assert datetime.fromisoformat(line["time"]).utcoffset() is not None, line
    access = [line for line in lines if line["logger"] == "fhir_bridge.access"]
    assert ("/healthz", 200) in {(line["route"], line["status"]) for line in access}
