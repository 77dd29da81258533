"""NUL characters (which PostgreSQL text cannot hold) are refused as bad input, never a 500."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/Patient?name=a%00b",
        "/fhir/Patient?identifier=x%00|y",
        "/fhir/Patient/a%00b",
        "/api/v1/sessions/a%00b",
        "/api/v1/sessions?patient=a%00",
        "/api/v1/referrals?status=a%00",
    ],
)
def test_a_nul_in_the_url_is_a_400_naming_the_url(client, url):
    resp = client.get(url)
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == ["url"]


def test_a_nul_inside_a_resource_is_a_422_at_its_element(client):
    body = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1", "display": "A\u0000B"},
    }
    resp = client.post(
        "/fhir/ServiceRequest", data=json.dumps(body), content_type="application/fhir+json"
    )
    assert resp.status_code == 422
    exprs = [e for i in resp.get_json()["issue"] for e in i.get("expression", [])]
    assert "ServiceRequest.subject.display" in exprs


def test_a_nul_in_a_session_record_is_a_422(client):
    resp = client.post(
        "/api/v1/sessions", data='{"session_id": "a\\u0000b"}', content_type="application/json"
    )
    assert resp.status_code == 422


def test_a_control_character_in_session_notes_is_a_422_at_its_path(client):
    from fhir_bridge.records.openapi import EXAMPLE_RECORD

    body = {**EXAMPLE_RECORD, "notes": {"subjective": "sore\u0000neck"}}
    resp = client.post("/api/v1/sessions", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == ["notes.subjective"]
