"""Reports filed as DocumentReferences: every N visits and at completion, versioned, never
duplicated, valid R4, numbers matching the engine, and visible exactly where the patient is."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace

import pytest
from fhir.resources.R4B.documentreference import DocumentReference
from pypdf import PdfReader
from sqlalchemy import text

from fhir_bridge.mapping.outcomes import outcome_series
from fhir_bridge.mapping.tables import load_tables
from fhir_bridge.services.progress_report import gather_episode
from fhir_bridge.services.report_documents import report_due
from tests.api.test_cdex import data_request, post_task
from tests.api.test_documentation import build_reviewed, payer, visit
from tests.support.tokens import bearer

LOINC = "http://loinc.org"
REPORT_SYSTEM = "https://clinic.example.org/fhir/report"


@pytest.fixture
def settings(settings):
    """A progress report every second visit."""
    return replace(settings, report_every_visits=2)


@pytest.fixture
def reviewed(runtime, app):
    """Three visits under one accepted referral (pain 7 -> 5 -> 3): one report, at visit 2."""
    return build_reviewed(runtime, app)


def reports(client, **params: str) -> list[dict]:
    resp = client.get("/fhir/DocumentReference", query_string=params)
    assert resp.status_code == 200, resp.get_json()
    return [e["resource"] for e in resp.get_json().get("entry", [])]


def report_events(runtime) -> list[tuple[str, int]]:
    with runtime.engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                text(
                    "SELECT resource_id, version_id FROM outbox_event"
                    " WHERE event_type = 'report.generated' ORDER BY pk"
                )
            )
        ]


def pdf_text(doc: dict) -> str:
    [pdf] = [
        c["attachment"]
        for c in doc["content"]
        if c["attachment"]["contentType"] == "application/pdf"
    ]
    reader = PdfReader(io.BytesIO(base64.b64decode(pdf["data"])))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


@pytest.mark.parametrize(
    ("used", "every", "due"),
    [(2, 2, True), (3, 2, False), (4, 2, True), (0, 2, False), (10, 0, False), (1, 1, True)],
)
def test_a_report_is_due_at_each_multiple_of_n(used, every, due):
    assert report_due(used, every) is due


def test_every_n_visits_a_new_version_of_one_progress_note(reviewed, runtime):
    app, sr_id, _ = reviewed
    client = app.test_client()
    [doc] = reports(client, patient="Patient/pat-rivera")
    DocumentReference.model_validate(doc)
    assert doc["meta"]["versionId"] == "1"  # filed at visit 2, not at visits 1 or 3
    assert doc["identifier"] == [{"system": REPORT_SYSTEM, "value": f"{sr_id}/progress"}]
    assert doc["type"]["coding"][0]["code"] == "11506-3"
    related = [r["reference"] for r in doc["context"]["related"]]
    assert related[0] == f"ServiceRequest/{sr_id}"
    assert sum(r.startswith("Procedure/") for r in related) == 2
    assert any(r.startswith("Observation/") for r in related)
    attachments = [c["attachment"] for c in doc["content"]]
    assert [a["contentType"] for a in attachments] == ["application/pdf", "text/html"]
    assert all(a["size"] == len(base64.b64decode(a["data"])) for a in attachments)
    assert "Visits used 2 of 6" in pdf_text(doc)
    # replaying a visit repeats nothing; the fourth visit makes version 2 of the same resource
    assert client.post("/api/v1/sessions", json=visit(1, 5)).status_code == 200
    assert client.post("/api/v1/sessions", json=visit(3, 2)).status_code == 201
    [again] = reports(client, patient="Patient/pat-rivera")
    assert (again["id"], again["meta"]["versionId"]) == (doc["id"], "2")
    assert sum(r["reference"].startswith("Procedure/") for r in again["context"]["related"]) == 4
    assert "Visits used 4 of 6" in pdf_text(again)
    assert report_events(runtime) == [(doc["id"], 1), (doc["id"], 2)]
    history = client.get(f"/fhir/DocumentReference/{doc['id']}/_history").get_json()
    assert history["total"] == 2


def test_completing_the_referral_files_the_discharge_summary_once(reviewed, runtime):
    app, sr_id, _ = reviewed
    client = app.test_client()
    assert client.post(f"/api/v1/referrals/{sr_id}/complete").status_code == 200
    assert client.post(f"/api/v1/referrals/{sr_id}/complete").status_code == 409
    [summary] = reports(client, type=f"{LOINC}|18842-5")
    DocumentReference.model_validate(summary)
    assert summary["meta"]["versionId"] == "1"
    assert summary["identifier"][0]["value"] == f"{sr_id}/discharge"
    text_ = pdf_text(summary)
    assert "Discharge summary: medical massage" in text_
    # the numbers in the filed PDF are the engine's
    tables = load_tables()
    series = outcome_series(
        gather_episode(runtime, sr_id).observations, tables.measures, tables.mcids
    )
    pain = [s for s in series if s.course and s.show(s.baseline.value) == "7/10"]
    assert pain, "the pain course starts at 7/10"
    for s in series:
        if not s.course:
            continue
        assert f"{s.show(s.baseline.value)} ({s.baseline.date})" in text_
        assert f"{s.show(s.latest.value)} ({s.latest.date})" in text_
        if len(s.course) > 1:
            assert f"{s.show_change(s.change)} ({s.percent_change:+.0f}%) {s.direction}" in text_
    assert len(reports(client, related=f"ServiceRequest/{sr_id}")) == 2
    kinds = {d["type"]["coding"][0]["code"] for d in reports(client, category="clinical-note")}
    assert kinds == {"11506-3", "18842-5"}
    assert [e for e in report_events(runtime) if e[0] == summary["id"]] == [(summary["id"], 1)]


def test_a_payer_and_an_ehr_see_the_report_exactly_when_they_see_the_patient(reviewed):
    app, _, payer_org = reviewed
    client = app.test_client()
    [doc] = reports(client)
    url = f"/fhir/DocumentReference/{doc['id']}"
    entitled = payer(app, payer_org)
    assert client.get(url, headers=entitled).status_code == 200
    everything = client.get("/fhir/Patient/pat-rivera/$everything", headers=entitled).get_json()
    found = [e["resource"] for e in everything["entry"]]
    assert ("DocumentReference", doc["id"]) in {(r["resourceType"], r["id"]) for r in found}
    strangers = [
        payer(app, "Organization/some-other-payer"),
        bearer(app, role="ehr", organization="Organization/other-ehr", scope="system/*.rs"),
    ]
    for headers in strangers:
        resp = client.get(url, headers=headers)
        assert resp.status_code == 404
        assert b"Rivera" not in resp.data
        listed = client.get("/fhir/DocumentReference", headers=headers).get_json()
        assert not listed.get("entry")


def test_documentation_carries_the_referrals_filed_reports(reviewed):
    app, sr_id, payer_org = reviewed
    client = app.test_client()
    [doc] = reports(client)
    url = f"/fhir/ServiceRequest/{sr_id}/$documentation"
    body = client.get(url, headers=payer(app, payer_org)).get_json()
    found = [e["resource"] for e in body["entry"] if e["search"]["mode"] == "include"]
    assert [r["id"] for r in found if r["resourceType"] == "DocumentReference"] == [doc["id"]]
    # a token that may not read DocumentReference gets the rest without it
    narrow = bearer(
        app,
        role="payer",
        organization=payer_org,
        scope="system/ServiceRequest.rs system/Procedure.rs system/Observation.rs",
    )
    body = client.get(url, headers=narrow).get_json()
    assert "DocumentReference" not in {e["resource"]["resourceType"] for e in body["entry"]}


def test_cdex_document_requests_get_the_filed_report(reviewed):
    app, sr_id, payer_org = reviewed
    client = app.test_client()
    headers = bearer(app, role="payer", organization=payer_org, scope="system/*.rs system/Task.cru")

    def ask(code: str) -> dict:
        body = data_request(
            "code",
            {"valueCodeableConcept": {"coding": [{"system": LOINC, "code": code}]}},
        )
        resp = post_task(app, headers, body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()

    not_yet = ask("18842-5")
    assert not_yet["status"] == "rejected"
    assert not_yet["statusReason"]["text"] == "No discharge summary is on file for this patient"
    [doc] = reports(client)
    progress = ask("11506-3")
    assert progress["status"] == "completed"
    [contained] = [c for c in progress["contained"] if c["resourceType"] == "DocumentReference"]
    assert contained["identifier"] == doc["identifier"]
    assert "versionId" not in contained.get("meta", {})
    DocumentReference.model_validate(contained)
    assert "Visits used 2 of 6" in pdf_text(contained)
    assert client.post(f"/api/v1/referrals/{sr_id}/complete").status_code == 200
    summary = ask("18842-5")
    assert summary["status"] == "completed"
    [contained] = [c for c in summary["contained"] if c["resourceType"] == "DocumentReference"]
    assert contained["type"]["coding"][0]["code"] == "18842-5"


def test_the_capability_statement_lists_document_reference(client):
    rest = client.get("/fhir/metadata").get_json()["rest"][0]
    [entry] = [r for r in rest["resource"] if r["type"] == "DocumentReference"]
    names = {p["name"] for p in entry["searchParam"]}
    assert {"patient", "subject", "type", "category", "date", "related"} <= names
    assert {i["code"] for i in entry["interaction"]} >= {"read", "vread", "search-type"}
