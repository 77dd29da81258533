"""Under gunicorn, /metrics adds up what every worker process counted."""

from __future__ import annotations

import pytest
import requests

from tests.api.test_metrics import _value
from tests.conftest import provision_database
from tests.support.served import served_bridge

pytestmark = pytest.mark.interop
HITS = 40


def test_every_workers_requests_are_counted(tmp_path_factory):
    with (
        provision_database("sqlite", tmp_path_factory) as url,
        served_bridge(url, FHIR_BRIDGE_DEV_OPEN_ACCESS="true") as base,
        requests.Session() as http,
    ):
        for _ in range(HITS):  # new connections: both workers take some
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        text = http.get(f"{base}/metrics", timeout=10).text
    count = _value(
        text,
        "fhir_bridge_http_request_duration_seconds_count",
        route="/healthz",
        method="GET",
        status="200",
    )
    assert count == HITS
