"""The progress report a physician files: rendered from the sample story, numbers checked in
the PDF's own text against the outcome engine."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from fhir_bridge.mapping.outcomes import outcome_series
from fhir_bridge.mapping.tables import load_tables
from fhir_bridge.services.loading import load_bundle
from fhir_bridge.services.progress_report import gather_episode
from tests.support.tokens import bearer

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
REFERRALS = [
    r["id"]
    for path in sorted(SAMPLES.glob("*.json"))
    for r in (e["resource"] for e in json.loads(path.read_text())["entry"])
    if r["resourceType"] == "ServiceRequest"
]
PDF = {"Accept": "application/pdf"}


@pytest.fixture
def story(runtime, app):
    """``make run``'s data plus the README walkthrough's visit (Ana Rivera's third)."""
    for path in sorted(SAMPLES.glob("*.json")):
        load_bundle(runtime, json.loads(path.read_text()))
    client = app.test_client()
    body = json.loads((SAMPLES / "sessions" / "whiplash-neck-pain.json").read_text())
    assert client.post("/api/v1/sessions", json=body).status_code == 201
    return client


def _text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


@pytest.mark.parametrize("referral", REFERRALS)
def test_each_sample_referral_renders_to_pdf_with_the_engine_numbers(runtime, story, referral):
    response = story.get(f"/api/v1/referrals/{referral}/progress-report", headers=PDF)
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    text = _text(response.data)
    assert "Progress report: medical massage" in text
    tables = load_tables()
    series = outcome_series(
        gather_episode(runtime, referral).observations, tables.measures, tables.mcids
    )
    assert series, "every sample referral has measurements"
    for s in series:
        if not s.course:
            continue
        assert f"{s.show(s.baseline.value)} ({s.baseline.date})" in text
        assert f"{s.show(s.latest.value)} ({s.latest.date})" in text
        if len(s.course) > 1:
            assert f"{s.show_change(s.change)} ({s.percent_change:+.0f}%) {s.direction}" in text
    assert "{score}" not in text


def test_walkthrough_patient_improves_over_three_visits(story):
    text = _text(
        story.get("/api/v1/referrals/sr-rivera-massage-2026-11/progress-report", headers=PDF).data
    )
    assert "Ana Lucia Rivera" in text
    assert "M54.2 Cervicalgia" in text
    assert "Dr. Priya Natarajan, MD (NPI 1407071236)" in text
    assert "8/10 (2026-11-13)" in text  # baseline
    assert "6/10 (2026-11-24)" in text  # latest, from the visit documented in the walkthrough
    assert "-2 points (-25%) improved MCID 2 points passed" in text
    assert "Visits used 3 of 12 (2 per week)" in text
    assert "2026-11-13 Swedish massage 45 97124 x 3" in text  # loaded with the sample data
    assert "Trigger point therapy (manual), Muscle energy technique 45 97140 x 3" in text
    assert "Acute whiplash-associated disorder grade II" in text  # assessment from the SOAP note


def test_html_by_accept_with_inline_svg_charts(story):
    response = story.get(
        "/api/v1/referrals/sr-rivera-massage-2026-11/progress-report?kind=discharge",
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<h1>Discharge summary: medical massage</h1>" in page
    assert page.count("<svg") >= 1
    assert "8/10" in page
    assert "{score}" not in page


def test_other_media_types_get_406_and_unknown_referrals_404(story):
    refused = story.get(
        "/api/v1/referrals/sr-rivera-massage-2026-11/progress-report",
        headers={"Accept": "application/json"},
    )
    assert refused.status_code == 406
    assert refused.get_json()["issue"][0]["expression"] == ["Accept"]
    missing = story.get("/api/v1/referrals/nope/progress-report", headers=PDF)
    assert missing.status_code == 404
    assert missing.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("role", ["payer", "ehr"])
def test_partners_cannot_read_the_report(app, story, role):
    """Under /api/v1: the request guard keeps it to the clinic's own roles."""
    headers = {
        **bearer(app, role=role, organization="Organization/org-payer-acme-health"),
        **PDF,
    }
    response = story.get(
        "/api/v1/referrals/sr-rivera-massage-2026-11/progress-report", headers=headers
    )
    assert response.status_code == 403
    assert b"Rivera" not in response.data


def test_documentation_summary_tells_the_walkthrough_story(story):
    """Issue 14's bug: the summary said "6 -> 6 (change 0) over 1 pre-treatment measurement"."""
    bundle = story.get("/fhir/ServiceRequest/sr-rivera-massage-2026-11/$documentation").get_json()
    notes = [
        e["resource"]["note"][0]["text"]
        for e in bundle["entry"]
        if e["resource"]["id"].startswith("outcome-change-")
    ]
    [pain] = [n for n in notes if n.startswith("Pain")]
    assert "8 -> 6 /10 (change -2 points, improved; MCID 2 points passed)" in pain
    assert "over 3 pre-treatment measurement(s), 2026-11-13 to 2026-11-24" in pain


def test_the_pdf_is_a_download_named_by_ids_only(story):
    response = story.get("/api/v1/referrals/sr-rivera-massage-2026-11/progress-report", headers=PDF)
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="progress-report-sr-rivera-massage-2026-11.pdf"'
    )


def test_post_files_the_report_as_a_document_reference(story):
    filed = story.post("/api/v1/referrals/sr-rivera-massage-2026-11/progress-report")
    assert filed.status_code == 201, filed.get_json()
    doc = filed.get_json()
    assert doc["resourceType"] == "DocumentReference"
    assert filed.headers["Location"].endswith(
        f"/fhir/DocumentReference/{doc['id']}/_history/{doc['meta']['versionId']}"
    )
    assert story.get(f"/fhir/DocumentReference/{doc['id']}").get_json()["id"] == doc["id"]
    found = story.get(
        "/fhir/DocumentReference",
        query_string={"patient": "Patient/pat-rivera-ana", "type": "http://loinc.org|11506-3"},
    ).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [doc["id"]]
    summary = story.post(
        "/api/v1/referrals/sr-rivera-massage-2026-11/progress-report?kind=discharge"
    )
    assert summary.status_code == 201
    assert summary.get_json()["id"] != doc["id"]
    assert story.post("/api/v1/referrals/nope/progress-report").status_code == 404
    assert story.post("/api/v1/referrals/x/progress-report?kind=other").status_code == 400
