"""``GET /metrics``: request latency, sessions and tokens counted, the delivery queue and the
inbox read from the store; no PHI in it; admins only."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from fhir_bridge.outbox.routing import route_pending
from fhir_bridge.store.db import write_session
from fhir_bridge.store.partners import PartnerStore
from tests.api.test_referrals import act, on_file, post, referral
from tests.support.tokens import bearer

__all__ = ["on_file"]  # a fixture, used by name

SAMPLE = Path(__file__).resolve().parents[2] / "sample_bundles/sessions/whiplash-neck-pain.json"
PHI = ("P-1001", "Rivera", "Lucia", "pat-rivera", "1234567893", "Sam Lee", "MMC-2026-000201")


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of an exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        found = re.match(r"([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if found is None or found.group(1) != name:
            continue
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', found.group(3) or ""))
        if pairs == labels:
            return float(found.group(4))
    return 0.0


def _metrics(client) -> str:
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.content_type.startswith("text/plain; version=0.0.4")
    return resp.get_data(as_text=True)


def test_metrics_count_the_work_and_read_the_queue(client, runtime, on_file):
    before = _metrics(client)
    with write_session(runtime.sessions) as s:
        PartnerStore(s).add(
            key="natarajan-ehr",
            name="Dr. Natarajan",
            kind="physician",
            base_url="http://127.0.0.1:9/fhir",
            events=["session.documented"],
            identifiers=[{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1407071236"}],
            auth_kind="none",
            auth={},
            now=datetime.now(UTC).replace(tzinfo=None),
        )
    sr = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    assert act(client, sr, "accept").status_code == 200
    resp = client.post(
        "/api/v1/sessions", data=SAMPLE.read_bytes(), content_type="application/json"
    )
    assert resp.status_code == 201
    refused = client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": None}
    )
    assert refused.status_code == 400
    route_pending(runtime)

    after = _metrics(client)
    route = {"route": "/api/v1/sessions", "method": "POST", "status": "201"}
    count = "fhir_bridge_http_request_duration_seconds_count"
    assert _value(after, count, **route) == _value(before, count, **route) + 1
    created = "fhir_bridge_sessions_received_total"
    assert _value(after, created, result="created") == _value(before, created, result="created") + 1
    tokens = "fhir_bridge_token_requests_total"
    assert _value(after, tokens, outcome="refused") == _value(before, tokens, outcome="refused") + 1
    assert _value(after, "fhir_bridge_deliveries", partner="natarajan-ehr", status="pending") == 1
    assert _value(after, "fhir_bridge_delivery_queue_depth") == 1
    assert _value(after, "fhir_bridge_delivery_oldest_pending_age_seconds") >= 0
    assert _value(after, "fhir_bridge_outbox_unrouted_events") == 0
    assert _value(after, "fhir_bridge_referrals", status="in-progress") == 1
    assert _value(after, "fhir_bridge_sessions_stored") == 1
    assert [p for p in PHI if p in after] == []


def test_only_admins_read_metrics(app, client):
    payer = bearer(app, role="payer", organization="Organization/org-payer-acme-health")
    resp = client.get("/metrics", headers=payer)
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["code"] == "forbidden"
    assert client.get("/metrics", headers={"Authorization": None}).status_code == 401


def test_a_record_with_phi_in_its_errors_leaves_none_in_metrics(client):
    record = json.loads(SAMPLE.read_text())
    record["treatments"][0]["minutes"] = 5000
    resp = client.post("/api/v1/sessions", data=json.dumps(record), content_type="application/json")
    assert resp.status_code == 422
    text = _metrics(client)
    assert _value(text, "fhir_bridge_sessions_received_total", result="refused") >= 1
    assert [p for p in PHI if p in text] == []
