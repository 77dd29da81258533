"""The audit trail: every external access and every token request leaves an AuditEvent."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import text

from fhir_bridge.services.audit import AuditTrail
from fhir_bridge.services.authorization import JWT_BEARER
from fhir_bridge.services.clients import add_client
from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore
from tests.support.jwks import ClientKey
from tests.support.tokens import bearer

PAYER_ORG = "Organization/org-payer-acme-health"


@pytest.fixture
def seeded(runtime, app):
    with write_session(runtime.sessions) as session:
        ResourceStore(session).bulk_create(
            [
                {"resourceType": "Patient", "id": "pat-1"},
                {
                    "resourceType": "Coverage",
                    "id": "cov-1",
                    "status": "active",
                    "beneficiary": {"reference": "Patient/pat-1"},
                    "payor": [{"reference": PAYER_ORG}],
                    "period": {"start": "2000-01-01"},
                },
            ]
        )
    return app


def audit_events(client) -> list[dict]:
    body = client.get("/fhir/AuditEvent?_count=100").get_json()
    return [e["resource"] for e in body.get("entry", [])]


def test_a_payer_read_is_audited_with_who_what_when_outcome_and_purpose(seeded):
    client = seeded.test_client()
    payer = bearer(seeded, role="payer", organization=PAYER_ORG, client_id="acme-review")
    assert client.get("/fhir/Patient/pat-1", headers=payer).status_code == 200
    assert client.get("/fhir/Patient/pat-2", headers=payer).status_code == 404
    events = audit_events(client)
    assert len(events) == 2
    ok = next(e for e in events if e["outcome"] == "0")
    AuditEvent.model_validate(ok)
    assert ok["subtype"][0]["code"] == "read"
    assert ok["action"] == "R"
    assert ok["entity"][0]["what"]["reference"] == "Patient/pat-1"
    assert ok["agent"][0]["who"]["reference"] == PAYER_ORG
    assert ok["agent"][0]["altId"] == "acme-review"
    assert ok["purposeOfEvent"][0]["coding"][0]["code"] == "COVERAGE"
    missing = next(e for e in events if e["outcome"] == "4")
    assert missing["entity"][0]["what"]["reference"] == "Patient/pat-2"
    # admins find them by patient
    found = client.get("/fhir/AuditEvent?patient=Patient/pat-1").get_json()
    assert [e["resource"]["outcome"] for e in found["entry"]] == ["0"]


def test_a_search_keeps_its_query(seeded):
    client = seeded.test_client()
    payer = bearer(seeded, role="payer", organization=PAYER_ORG)
    client.get(
        "/fhir/Observation?patient=Patient/pat-1&code=http://loinc.org|72514-3", headers=payer
    )
    (event,) = audit_events(client)
    query = base64.b64decode(event["entity"][0]["query"]).decode()
    assert "patient=Patient/pat-1" in query
    assert event["subtype"][0]["code"] == "search-type"


def test_refused_requests_and_token_requests_are_audited(seeded, runtime):
    client = seeded.test_client()
    assert client.get("/fhir/Patient", headers={"Authorization": None}).status_code == 401
    key = ClientKey.es384()
    add_client(
        runtime,
        client_id="acme-review",
        name="Acme",
        role="payer",
        organization=PAYER_ORG,
        jwks_text=key.jwks_text(),
    )
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": key.assertion("acme-review", "http://bridge.test/auth/token"),
    }
    assert client.post("/auth/token", data=form, headers={"Authorization": None}).status_code == 200
    assert client.post("/auth/token", data=form, headers={"Authorization": None}).status_code == 401
    events = audit_events(client)
    logins = [e for e in events if e["type"]["code"] == "110114"]
    assert sorted(e["outcome"] for e in logins) == ["0", "4"]
    assert all(e["agent"][0]["altId"] == "acme-review" for e in logins)
    refused = [e for e in events if e["type"]["code"] == "rest"]
    assert [e["outcome"] for e in refused] == ["4"]
    for e in events:
        AuditEvent.model_validate(e)


def test_the_clinics_own_requests_are_not_audit_noise(seeded):
    client = seeded.test_client()
    client.get("/fhir/Patient/pat-1", headers=bearer(seeded, role="clinic"))
    assert audit_events(client) == []


def count_audit_events(runtime) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM resource WHERE resource_type = 'AuditEvent'")
        ).scalar_one()


EVENT = {"resourceType": "AuditEvent", "recorded": "2026-11-29T00:00:00Z", "action": "R"}


def test_a_failed_audit_write_stays_spooled_and_is_stored_by_the_next_flush(
    runtime, tmp_path, monkeypatch
):
    trail = AuditTrail(runtime, tmp_path, background=False)
    real_store = trail._store
    monkeypatch.setattr(trail, "_store", lambda events: False)  # the database is down
    trail.record(EVENT)
    trail.record({**EVENT, "action": "E"})
    assert count_audit_events(runtime) == 0
    spooled = [json.loads(x) for f in tmp_path.iterdir() for x in f.read_text().splitlines()]
    assert sorted(e["action"] for e in spooled) == ["E", "R"]
    monkeypatch.setattr(trail, "_store", real_store)  # it is back
    assert trail.flush() == 2
    assert count_audit_events(runtime) == 2
    assert list(tmp_path.iterdir()) == []


def test_the_spool_of_a_process_that_died_is_taken_over(runtime, tmp_path):
    orphan = tmp_path / "audit-999999.jsonl"  # no such process
    orphan.write_text(json.dumps({**EVENT, "id": "orphan-1"}) + "\n")
    trail = AuditTrail(runtime, tmp_path, background=False)
    assert trail.flush() == 1
    assert count_audit_events(runtime) == 1


def test_a_batch_stored_before_a_crash_is_not_stored_twice(runtime, tmp_path):
    trail = AuditTrail(runtime, tmp_path, background=False)
    trail.record(EVENT)  # stored
    [stored_id] = [e["resource"]["id"] for e in _all_audit(runtime)]
    # the spool was not removed (crash between commit and unlink), plus a new event
    (tmp_path / "audit-999999.jsonl").write_text(
        json.dumps({**EVENT, "id": stored_id}) + "\n" + json.dumps({**EVENT, "id": "new-1"}) + "\n"
    )
    assert trail.flush() == 2
    assert count_audit_events(runtime) == 2


def _all_audit(runtime) -> list[dict]:
    with runtime.engine.connect() as conn:
        ids = conn.execute(
            text("SELECT resource_id FROM resource WHERE resource_type = 'AuditEvent'")
        ).scalars()
        return [{"resource": {"id": i}} for i in ids]


def test_the_background_flusher_stores_events_without_being_asked(runtime, tmp_path):
    trail = AuditTrail(runtime, tmp_path, background=True)
    trail.record(EVENT)
    deadline = time.monotonic() + 10
    while count_audit_events(runtime) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    trail.close()
    assert count_audit_events(runtime) == 1
