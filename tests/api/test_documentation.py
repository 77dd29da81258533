"""What a payer reviews: ``ServiceRequest/$documentation`` and ``Patient/$everything``, scoped.

Built through the real pipeline: a referral posted and accepted, then three documented visits
whose pre-treatment pain falls 7 -> 5 -> 3.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from fhir_bridge.records.openapi import EXAMPLE_RECORD
from tests.factories import patient, practitioner, store_all
from tests.support.tokens import bearer

FHIR_JSON = "application/fhir+json"
PLACER = "urn:oid:2.16.840.1.113883.19.5"
PAIN_LOINC = "72514-3"


def referral() -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}
                    ]
                },
                "system": PLACER,
                "value": "SR-8891",
            }
        ],
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97124"}]},
        "subject": {"reference": "Patient/pat-rivera"},
        "requester": {"reference": "Practitioner/dr-natarajan"},
        "authoredOn": "2026-11-10",
        "reasonCode": [
            {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "S13.4XXA"}]}
        ],
        "occurrenceTiming": {
            "repeat": {"count": 6, "frequency": 2, "period": 1, "periodUnit": "wk"}
        },
    }


def visit(n: int, pain_before: int) -> dict[str, Any]:
    """The contract example, ``n`` weeks later, with its pre-treatment pain set."""
    body = copy.deepcopy(EXAMPLE_RECORD)
    body["session_id"] = f"V-{n}"
    shift = timedelta(weeks=n)

    def later(value: str) -> str:
        return (datetime.fromisoformat(value) + shift).isoformat()

    body["started_at"], body["ended_at"] = later(body["started_at"]), later(body["ended_at"])
    for a in body["assessments"]:
        if a.get("at"):
            a["at"] = later(a["at"])
        if a["measure"] == "pain_nrs" and a["phase"] == "pre":
            a["value"] = pain_before
    return body


@pytest.fixture
def reviewed(runtime, app):
    """A referral with three visits; returns (app, service request id, payer organization)."""
    return build_reviewed(runtime, app)


def build_reviewed(runtime, app) -> tuple[Any, str, str]:
    """Store the patients and physician, post the referral, accept it, document three visits."""
    store_all(
        runtime,
        [
            patient("pat-rivera", "P-1001", "Rivera", "Ana"),
            patient("pat-other", "P-2002", "Okafor", "Grace"),
            practitioner("dr-natarajan", "1407071236", "Natarajan", "Priya"),
        ],
    )
    client = app.test_client()
    resp = client.post("/fhir/ServiceRequest", data=json.dumps(referral()), content_type=FHIR_JSON)
    assert resp.status_code == 201, resp.get_json()
    sr_id = resp.get_json()["id"]
    assert client.post(f"/api/v1/referrals/{sr_id}/accept", json={}).status_code == 200
    for n, pain in ((0, 7), (1, 5), (2, 3)):
        posted = client.post("/api/v1/sessions", json=visit(n, pain))
        assert posted.status_code == 201, posted.get_json()
    [coverage] = [e["resource"] for e in client.get("/fhir/Coverage").get_json()["entry"]]
    return app, sr_id, coverage["payor"][0]["reference"]


def payer(app, organization: str) -> dict[str, str]:
    return bearer(app, role="payer", organization=organization, scope="system/*.rs")


def test_documentation_is_one_valid_bundle_with_everything_behind_the_prescription(reviewed):
    app, sr_id, payer_org = reviewed
    resp = app.test_client().get(
        f"/fhir/ServiceRequest/{sr_id}/$documentation", headers=payer(app, payer_org)
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    matches = [e["resource"] for e in body["entry"] if e["search"]["mode"] == "match"]
    assert [(r["resourceType"], r["id"]) for r in matches] == [("ServiceRequest", sr_id)]
    included = [e["resource"] for e in body["entry"] if e["search"]["mode"] == "include"]
    kinds = [r["resourceType"] for r in included]
    assert kinds.count("Procedure") == 3
    assert kinds.count("Patient") == 1
    assert kinds.count("Coverage") == 1
    assert "Goal" in kinds
    visit_obs = [r for r in included if r["resourceType"] == "Observation" and "partOf" in r]
    assert len(visit_obs) == 3 * len(EXAMPLE_RECORD["assessments"])
    summary = {
        r["code"]["text"]: r
        for r in included
        if r["resourceType"] == "Observation" and "partOf" not in r
    }
    [pain] = [r for text, r in summary.items() if "Pain" in text or "pain" in text]
    assert pain["valueQuantity"]["value"] == -4
    assert [c["valueQuantity"]["value"] for c in pain["component"]] == [7, 3]
    assert pain["component"][0]["code"]["coding"][0]["code"] == PAIN_LOINC
    assert "7 -> 3" in pain["note"][0]["text"]
    assert "3 pre-treatment measurement" in pain["note"][0]["text"]
    sources = {ref["reference"] for ref in pain["derivedFrom"]}
    assert sources <= {f"Observation/{o['id']}" for o in visit_obs}


def test_another_payer_gets_404_for_documentation_and_everything(reviewed):
    app, sr_id, _ = reviewed
    client = app.test_client()
    stranger = payer(app, "Organization/some-other-payer")
    for url in (
        f"/fhir/ServiceRequest/{sr_id}/$documentation",
        "/fhir/Patient/pat-rivera/$everything",
    ):
        resp = client.get(url, headers=stranger)
        assert resp.status_code == 404, url
        assert resp.get_json()["issue"][0]["code"] == "not-found"


def pages(client, url: str, headers: dict[str, str]) -> list[dict]:
    out = []
    while url:
        body = client.get(url, headers=headers).get_json()
        assert body["resourceType"] == "Bundle", body
        out += body.get("entry", [])
        url = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        url = url.removeprefix("http://bridge.test") if url else None
    return out


def test_everything_pages_through_the_patients_records_and_honours_type_and_dates(reviewed):
    app, _, payer_org = reviewed
    client = app.test_client()
    headers = payer(app, payer_org)
    entries = pages(client, "/fhir/Patient/pat-rivera/$everything?_count=5", headers)
    matches = [e["resource"] for e in entries if e["search"]["mode"] == "match"]
    keys = [(r["resourceType"], r["id"]) for r in matches]
    assert len(keys) == len(set(keys))
    kinds = [k for k, _ in keys]
    assert kinds.count("Patient") == 1
    assert kinds.count("Procedure") == 3
    assert kinds.count("ServiceRequest") == 1
    assert all(
        r.get("subject", r.get("beneficiary", r.get("for", {}))).get("reference")
        in (None, "Patient/pat-rivera")
        for r in matches
    )
    admin = pages(client, "/fhir/Patient/pat-rivera/$everything", bearer(app))
    assert {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in admin
        if e["search"]["mode"] == "match"
    } == set(keys)
    only = pages(client, "/fhir/Patient/pat-rivera/$everything?_type=Procedure", headers)
    assert {e["resource"]["resourceType"] for e in only if e["search"]["mode"] == "match"} == {
        "Procedure"
    }
    # the second visit's week only: one Procedure
    week = "start=2026-11-26&end=2026-11-28"
    dated = pages(client, f"/fhir/Patient/pat-rivera/$everything?_type=Procedure&{week}", headers)
    assert len([e for e in dated if e["search"]["mode"] == "match"]) == 1


def test_everything_gives_only_what_the_token_may_read(reviewed):
    app, _, payer_org = reviewed
    headers = bearer(app, role="payer", organization=payer_org, scope="system/Patient.rs")
    entries = pages(app.test_client(), "/fhir/Patient/pat-rivera/$everything", headers)
    assert {e["resource"]["resourceType"] for e in entries if e["search"]["mode"] == "match"} == {
        "Patient"
    }
    denied = app.test_client().get(
        "/fhir/Patient/pat-rivera/$everything",
        headers=bearer(app, role="payer", organization=payer_org, scope="system/Observation.rs"),
    )
    assert denied.status_code == 403


def test_the_capability_statement_lists_patient_everything(client):
    body = client.get("/fhir/metadata").get_json()
    [patient] = [r for r in body["rest"][0]["resource"] if r["type"] == "Patient"]
    assert patient["operation"] == [
        {
            "name": "everything",
            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        },
        {
            "name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        },
    ]
