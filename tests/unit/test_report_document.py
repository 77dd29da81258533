"""The report as a DocumentReference: valid R4, typed by LOINC, linked to what it summarises."""

from __future__ import annotations

import base64

import pytest
from fhir.resources.R4B.documentreference import DocumentReference

from fhir_bridge.mapping.report_document import report_document_reference


def make(kind: str = "progress", pdf: bytes = b"%PDF-1.3 report") -> dict:
    return report_document_reference(
        kind=kind,
        clinic_system_base="https://clinic.example.org/fhir",
        referral_id="sr-rivera-massage-2026-11",
        patient_reference="Patient/pat-rivera-ana",
        author_reference="Practitioner/prac-lee-sam",
        procedure_ids=["proc-rivera-ana-2026-11-13", "proc-rivera-ana-2026-11-17"],
        observation_ids=["obs-rivera-ana-2026-11-13-pain-pre"],
        period=("2026-11-13T10:00:00-05:00", "2026-11-24T09:55:00-05:00"),
        pdf=pdf,
        html="<!DOCTYPE html><html><body>Report</body></html>",
        generated_at="2026-11-30T12:00:00Z",
    )


@pytest.mark.parametrize(("kind", "code"), [("progress", "11506-3"), ("discharge", "18842-5")])
def test_validates_with_the_r4_models_and_carries_pdf_and_html(kind, code):
    doc = make(kind)
    DocumentReference.model_validate(doc)
    assert doc["type"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": code,
        "display": {"progress": "Progress note", "discharge": "Discharge summary"}[kind],
    }
    attachments = [c["attachment"] for c in doc["content"]]
    assert [a["contentType"] for a in attachments] == ["application/pdf", "text/html"]
    assert base64.b64decode(attachments[0]["data"]) == b"%PDF-1.3 report"
    assert attachments[0]["size"] == len(b"%PDF-1.3 report")


def test_context_links_the_referral_visits_and_observations():
    related = [r["reference"] for r in make()["context"]["related"]]
    assert related == [
        "ServiceRequest/sr-rivera-massage-2026-11",
        "Procedure/proc-rivera-ana-2026-11-13",
        "Procedure/proc-rivera-ana-2026-11-17",
        "Observation/obs-rivera-ana-2026-11-13-pain-pre",
    ]


def test_a_regenerated_report_is_the_same_resource_and_the_kinds_differ():
    first, again = make(pdf=b"%PDF one"), make(pdf=b"%PDF two")
    assert first["id"] == again["id"]
    assert first["identifier"] == again["identifier"]
    assert first["content"] != again["content"]
    assert make("discharge")["id"] != first["id"]
