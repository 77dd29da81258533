"""The access policy on the paths that went around it: batch entries, writes, type scopes,
$everything dates, CDex Tasks and the audit trail. Each test is an escalation an outside
client could make before the policy was one decision point.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from fhir_bridge.services.authorization import utcnow
from fhir_bridge.store.clients import ClientStore
from fhir_bridge.store.db import write_session
from tests.api.test_access_matrix import PATIENTS, PAYERS, all_pages, entitled, matrix
from tests.api.test_cdex import data_request
from tests.support.tokens import bearer

__all__ = ["matrix"]  # the fixture, shared with the access matrix

FHIR_JSON = "application/fhir+json"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles" / "referrals"
NORTH_NPI = "1407071236"  # a valid NPI (check digit) the north EHR speaks for
LAKE_PATIENT = "p01"  # referred by the lake EHR (through its PractitionerRole)
NORTH_PATIENT = "p02"  # referred by the north EHR


def ehr(app, org: str, scope: str = "system/*.rs system/*.cu") -> dict[str, str]:
    return bearer(
        app, role="ehr", organization=f"Organization/{org}", scope=scope, client_id=f"c-{org}"
    )


def payer(app, org: str, scope: str = "system/*.rs system/Task.c") -> dict[str, str]:
    return bearer(
        app, role="payer", organization=f"Organization/{org}", scope=scope, client_id=f"c-{org}"
    )


def register(runtime, client_id: str, org: str, npis: tuple[str, ...]) -> None:
    with write_session(runtime.sessions) as session:
        ClientStore(session).add(
            client_id=client_id,
            name=client_id,
            role="ehr",
            organization=f"Organization/{org}",
            scopes="system/*.rs system/*.cu",
            jwks={"keys": []},
            jwks_url=None,
            now=utcnow(),
            npis=npis,
        )


def post_bundle(app, headers, kind: str, entries: list[dict]):
    body = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return app.test_client().post(
        "/fhir", data=json.dumps(body), content_type=FHIR_JSON, headers=headers
    )


def get_entry(url: str) -> dict:
    return {"request": {"method": "GET", "url": url}}


def audit_events(app, patient: str) -> list[dict]:
    found, _ = all_pages(
        app.test_client(), f"/fhir/AuditEvent?patient=Patient/{patient}&_count=100", {}
    )
    return found


# --- batch and transaction GET entries ------------------------------------------------------


@pytest.mark.parametrize("who", ["ehr-north", "payer-a"])
def test_batch_get_entries_answer_404_outside_the_scope_exactly_like_a_read(matrix, who):
    headers = ehr(matrix, who) if who.startswith("ehr") else payer(matrix, who)
    mine = entitled(who)
    urls = [f"{t}/{p}" for p in PATIENTS for t in ("Patient",)]
    urls += [f"Condition/cond-{p}" for p in PATIENTS] + [f"Coverage/cov-{p}" for p in PATIENTS]
    resp = post_bundle(matrix, headers, "batch", [get_entry(u) for u in urls])
    assert resp.status_code == 200
    for url, entry in zip(urls, resp.get_json()["entry"], strict=True):
        pid = url.split("-", 1)[-1] if "-" in url else url.split("/")[1]
        direct = matrix.test_client().get(f"/fhir/{url}", headers=headers).status_code
        status = int(entry["response"]["status"].split()[0])
        assert status == direct, url
        if who.startswith("ehr") or not url.startswith("Coverage"):
            assert status == (200 if pid in mine else 404), url


def test_a_transaction_reading_a_foreign_patient_fails_as_not_found(matrix):
    headers = ehr(matrix, "ehr-north")
    resp = post_bundle(matrix, headers, "transaction", [get_entry(f"Patient/{LAKE_PATIENT}")])
    assert resp.status_code == 404
    assert resp.get_json()["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]


def test_audit_events_are_not_readable_through_a_batch(matrix):
    matrix.test_client().get("/fhir/Patient/p00", headers=payer(matrix, "payer-a"))
    event_id = audit_events(matrix, "p00")[0]["id"]
    for headers in (payer(matrix, "payer-a"), ehr(matrix, "ehr-north")):
        resp = post_bundle(matrix, headers, "batch", [get_entry(f"AuditEvent/{event_id}")])
        assert resp.get_json()["entry"][0]["response"]["status"].startswith("404")


# --- SMART type scopes reach includes and CDex answers --------------------------------------


def test_a_one_type_token_gets_no_other_type_through_include_or_revinclude(matrix):
    headers = payer(matrix, "payer-a", scope="system/Observation.rs")
    client = matrix.test_client()
    obs, included = all_pages(
        client,
        "/fhir/Observation?_include=Observation:patient&_include=Observation:part-of",
        headers,
    )
    assert obs
    assert included == []
    assert client.get("/fhir/Patient?_id=p00", headers=headers).status_code == 403


def test_a_task_only_token_gets_no_clinical_note_through_a_cdex_request(matrix):
    headers = payer(matrix, "payer-a", scope="system/Task.cru")
    body = data_request(
        "code",
        {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}},
        {"reference": "Patient/p00"},
    )
    resp = matrix.test_client().post(
        "/fhir/Task", data=json.dumps(body), content_type=FHIR_JSON, headers=headers
    )
    task = resp.get_json()
    assert task["status"] == "rejected"
    assert "contained" not in task or all(
        c["resourceType"] != "DocumentReference" for c in task["contained"]
    )


# --- payers: membership is never widened, competitors' coverage never shown -----------------


def test_everything_dates_cannot_widen_an_expired_membership(matrix):
    # p06: payer-a's coverage ended ten days ago
    assert "p06" not in entitled("payer-a")
    client = matrix.test_client()
    for query in ("", "?start=2020-01-01", "?start=2020-01-01&end=2099-01-01"):
        resp = client.get(f"/fhir/Patient/p06/$everything{query}", headers=payer(matrix, "payer-a"))
        assert resp.status_code == 404, query


def test_a_payer_never_sees_a_competing_payers_coverage(matrix):
    # p00: current with payer-a, and a second current coverage with payer-b
    client = matrix.test_client()
    for who, own in (("payer-a", "cov-p00"), ("payer-b", "cov2-p00")):
        headers = payer(matrix, who)
        covs, _ = all_pages(client, "/fhir/Coverage?patient=Patient/p00", headers)
        assert [c["id"] for c in covs] == [own]
        found, _ = all_pages(client, "/fhir/Patient/p00/$everything", headers)
        assert [r["id"] for r in found if r["resourceType"] == "Coverage"] == [own]
        other = "cov2-p00" if own == "cov-p00" else "cov-p00"
        assert client.get(f"/fhir/Coverage/{other}", headers=headers).status_code == 404


# --- EHR writes stay inside the EHR's own organization ---------------------------------------


@pytest.mark.parametrize(
    ("resource", "url"),
    [
        (
            {
                "resourceType": "Coverage",
                "id": "cov-p01",
                "status": "active",
                "beneficiary": {"reference": "Patient/p01"},
                "payor": [{"reference": "Organization/payer-c"}],
            },
            "Coverage/cov-p01",
        ),
        ({"resourceType": "Patient", "id": "p01", "gender": "other"}, "Patient/p01"),
        (
            {"resourceType": "Organization", "id": "payer-a", "name": "mine now"},
            "Organization/payer-a",
        ),
        (
            {
                "resourceType": "PractitionerRole",
                "id": "role-ehr-lake",
                "practitioner": {"reference": "Practitioner/prac-ehr-lake"},
                "organization": {"reference": "Organization/ehr-north"},
            },
            "PractitionerRole/role-ehr-lake",
        ),
    ],
)
def test_an_ehr_may_not_put_demographics_or_directory_entries(matrix, resource, url):
    entry = {"resource": resource, "request": {"method": "PUT", "url": url}}
    before = matrix.test_client().get(f"/fhir/{url}").get_json()
    for kind in ("transaction", "batch"):
        resp = post_bundle(matrix, ehr(matrix, "ehr-north"), kind, [entry])
        outcome = resp.get_json() if kind == "transaction" else None
        if kind == "batch":
            assert resp.get_json()["entry"][0]["response"]["status"].startswith("403")
            outcome = resp.get_json()["entry"][0]["response"]["outcome"]
        else:
            assert resp.status_code == 403
        assert outcome["issue"][0]["code"] == "forbidden"
        assert outcome["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert matrix.test_client().get(f"/fhir/{url}").get_json() == before


def test_an_ehr_may_not_place_another_clinics_physician_in_its_organization(runtime, matrix):
    register(runtime, "c-ehr-north", "ehr-north", (NORTH_NPI,))
    role = {
        "fullUrl": "urn:uuid:1b0e2c55-5f3e-4a8a-9a1e-0d9b3a2f6c11",
        "resource": {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": "Practitioner/prac-ehr-lake"},
            "organization": {"reference": "Organization/ehr-north"},
        },
        "request": {"method": "POST", "url": "PractitionerRole"},
    }
    resp = post_bundle(matrix, ehr(matrix, "ehr-north"), "transaction", [role])
    assert resp.status_code == 403  # not inside a referral Bundle
    referral = _referral_entries(NORTH_NPI, "SR-ROLE-1")
    resp = post_bundle(matrix, ehr(matrix, "ehr-north"), "transaction", [*referral, role])
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["expression"] == [
        "Bundle.entry[1].resource.ofType(PractitionerRole).practitioner"
    ]
    # the lake EHR's patients did not become visible to north
    assert (
        matrix.test_client()
        .get(f"/fhir/Patient/{LAKE_PATIENT}", headers=ehr(matrix, "ehr-north"))
        .status_code
        == 404
    )


def test_an_ehr_may_not_take_over_another_organizations_referral(matrix):
    lake_sr = matrix.test_client().get(f"/fhir/ServiceRequest/sr-{LAKE_PATIENT}").get_json()
    hijacked = {**lake_sr, "requester": {"reference": "Organization/ehr-north"}}
    resp = matrix.test_client().put(
        f"/fhir/ServiceRequest/sr-{LAKE_PATIENT}",
        data=json.dumps(hijacked),
        content_type=FHIR_JSON,
        headers=ehr(matrix, "ehr-north"),
    )
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["code"] == "forbidden"
    lake = ehr(matrix, "ehr-lake")
    assert (
        matrix.test_client().get(f"/fhir/Patient/{LAKE_PATIENT}", headers=lake).status_code == 200
    )
    north = ehr(matrix, "ehr-north")
    assert (
        matrix.test_client().get(f"/fhir/Patient/{LAKE_PATIENT}", headers=north).status_code == 404
    )


def _referral(npi: str, placer: str, subject: dict) -> dict:
    sr = json.loads((SAMPLES / "lymphedema-servicerequest.json").read_text())
    sr["identifier"][0]["value"] = placer
    sr["requester"]["identifier"]["value"] = npi
    sr["subject"] = subject
    sr.pop("contained", None)
    return sr


def _referral_entries(npi: str, placer: str) -> list[dict]:
    sr = _referral(npi, placer, {"reference": f"Patient/{NORTH_PATIENT}"})
    return [{"resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}}]


def test_a_referral_must_come_from_the_ehrs_own_practitioners(runtime, matrix):
    register(runtime, "c-ehr-north", "ehr-north", (NORTH_NPI,))
    headers = ehr(matrix, "ehr-north")
    client = matrix.test_client()
    foreign = _referral("1245319599", "SR-FOREIGN-1", {"reference": "Patient/p02"})
    resp = client.post(
        "/fhir/ServiceRequest", data=json.dumps(foreign), content_type=FHIR_JSON, headers=headers
    )
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["expression"] == ["ServiceRequest.requester"]
    own = _referral(NORTH_NPI, "SR-OWN-1", {"reference": "Patient/p02"})
    resp = client.post(
        "/fhir/ServiceRequest", data=json.dumps(own), content_type=FHIR_JSON, headers=headers
    )
    assert resp.status_code == 201, resp.get_json()


def test_access_from_a_referral_starts_when_the_clinic_accepts_it(runtime, matrix):
    register(runtime, "c-ehr-north", "ehr-north", (NORTH_NPI,))
    headers = ehr(matrix, "ehr-north")
    client = matrix.test_client()
    assert (
        client.get(f"/fhir/Patient/{LAKE_PATIENT}/$everything", headers=headers).status_code == 404
    )
    sr = _referral(NORTH_NPI, "SR-NEW-1", {"reference": f"Patient/{LAKE_PATIENT}"})
    resp = client.post(
        "/fhir/ServiceRequest", data=json.dumps(sr), content_type=FHIR_JSON, headers=headers
    )
    assert resp.status_code == 201, resp.get_json()
    sr_id = resp.get_json()["id"]
    # its own referral and Task it sees at once; the patient's chart not yet
    assert client.get(f"/fhir/ServiceRequest/{sr_id}", headers=headers).status_code == 200
    tasks, _ = all_pages(client, f"/fhir/Task?focus=ServiceRequest/{sr_id}", headers)
    assert len(tasks) == 1
    assert (
        client.get(f"/fhir/Patient/{LAKE_PATIENT}/$everything", headers=headers).status_code == 404
    )
    assert client.get(f"/fhir/Condition/cond-{LAKE_PATIENT}", headers=headers).status_code == 404
    assert client.post(f"/api/v1/referrals/{sr_id}/accept", json={}).status_code == 200
    assert (
        client.get(f"/fhir/Patient/{LAKE_PATIENT}/$everything", headers=headers).status_code == 200
    )
    assert client.get(f"/fhir/Condition/cond-{LAKE_PATIENT}", headers=headers).status_code == 200


def test_a_declined_referral_never_opens_the_chart(runtime, matrix):
    register(runtime, "c-ehr-north", "ehr-north", (NORTH_NPI,))
    headers = ehr(matrix, "ehr-north")
    client = matrix.test_client()
    sr = _referral(NORTH_NPI, "SR-NEW-2", {"reference": f"Patient/{LAKE_PATIENT}"})
    sr_id = client.post(
        "/fhir/ServiceRequest", data=json.dumps(sr), content_type=FHIR_JSON, headers=headers
    ).get_json()["id"]
    assert (
        client.post(f"/api/v1/referrals/{sr_id}/decline", json={"reason": "Not for us"}).status_code
        == 200
    )
    assert client.get(f"/fhir/Patient/{LAKE_PATIENT}", headers=headers).status_code == 404


def test_a_referral_bundle_from_its_own_physician_is_taken_in(runtime, matrix):
    register(runtime, "c-ehr-north", "ehr-north", (NORTH_NPI,))
    bundle = json.loads((SAMPLES / "whiplash-transaction.json").read_text())
    resp = matrix.test_client().post(
        "/fhir", data=json.dumps(bundle), content_type=FHIR_JSON, headers=ehr(matrix, "ehr-north")
    )
    assert resp.status_code == 200, resp.get_json()
    other = copy.deepcopy(bundle)
    other["entry"][-1]["resource"]["identifier"][0]["value"] = "SR-OTHER"
    resp = matrix.test_client().post(
        "/fhir", data=json.dumps(other), content_type=FHIR_JSON, headers=ehr(matrix, "ehr-lake")
    )
    assert resp.status_code == 403


# --- CDex requests stay with their requester -------------------------------------------------


def _document_request(patient: dict) -> dict:
    return data_request(
        "code",
        {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}},
        patient,
    )


def _member_elsewhere(patient: str) -> bool:
    return any(patient in entitled(p) for p in PAYERS)


def test_a_refused_cdex_request_joins_no_patient_compartment(matrix):
    # a patient of another payer, not of payer-a; the request names it anyway, with a note
    other = next(p for p in PATIENTS if p not in entitled("payer-a") and _member_elsewhere(p))
    body = {**_document_request({"reference": f"Patient/{other}"}), "note": [{"text": "a note"}]}
    client = matrix.test_client()
    task = client.post(
        "/fhir/Task",
        data=json.dumps(body),
        content_type=FHIR_JSON,
        headers=payer(matrix, "payer-a"),
    ).get_json()
    assert task["status"] == "rejected"
    assert "reference" not in task.get("for", {})
    member = next(p for p in PAYERS if other in entitled(p))
    seen, _ = all_pages(client, f"/fhir/Task?patient=Patient/{other}", payer(matrix, member))
    assert seen == []
    mine, _ = all_pages(client, f"/fhir/Task?_id={task['id']}", payer(matrix, "payer-a"))
    assert [t["id"] for t in mine] == [task["id"]]


def test_an_answered_cdex_request_is_seen_by_its_requester_only(matrix):
    # p00 is a member of payer-a and of payer-b
    client = matrix.test_client()
    task = client.post(
        "/fhir/Task",
        data=json.dumps(_document_request({"reference": "Patient/p00"})),
        content_type=FHIR_JSON,
        headers=payer(matrix, "payer-a"),
    ).get_json()
    assert task["status"] == "completed"
    seen, _ = all_pages(client, "/fhir/Task?patient=Patient/p00", payer(matrix, "payer-b"))
    assert task["id"] not in {t["id"] for t in seen}
    assert (
        client.get(f"/fhir/Task/{task['id']}", headers=payer(matrix, "payer-b")).status_code == 404
    )
    assert (
        client.get(f"/fhir/Task/{task['id']}", headers=payer(matrix, "payer-a")).status_code == 200
    )


# --- the audit trail answers "who saw this patient" ------------------------------------------


def _subtypes(event: dict) -> set[str]:
    return {c.get("code") for c in event.get("subtype", [])}


def _patients(event: dict) -> set[str]:
    return {
        e["what"]["reference"].split("/")[1]
        for e in event.get("entity", [])
        if e.get("what", {}).get("reference", "").startswith("Patient/")
    }


def test_every_disclosure_names_its_patients_in_the_audit_trail(matrix):
    client = matrix.test_client()
    a = payer(matrix, "payer-a")
    client.get("/fhir/Patient/p00/$everything", headers=a)
    client.get("/fhir/Observation?_include=Observation:patient&_count=50", headers=a)
    post_bundle(matrix, ehr(matrix, "ehr-north"), "batch", [get_entry(f"Patient/{NORTH_PATIENT}")])
    task = client.post(
        "/fhir/Task",
        data=json.dumps(_document_request({"reference": "Patient/p00"})),
        content_type=FHIR_JSON,
        headers=a,
    ).get_json()

    p00 = audit_events(matrix, "p00")
    everything = [e for e in p00 if "Patient-everything" in _subtypes(e)]
    assert len(everything) == 1
    assert everything[0]["subtype"][0]["code"] == "operation"
    searches = [e for e in p00 if "search-type" in _subtypes(e)]
    assert searches
    assert _patients(searches[0]) == entitled("payer-a")
    cdex = [e for e in p00 if "cdex-data-request" in _subtypes(e)]
    assert len(cdex) == 1
    assert {e["what"].get("reference") for e in cdex[0]["entity"]} >= {
        f"Task/{task['id']}",
        "Patient/p00",
    }
    batch = audit_events(matrix, NORTH_PATIENT)
    assert any("transaction" in _subtypes(e) for e in batch)
    # nothing names a patient that was not disclosed
    for event in p00:
        query = next((e.get("query") for e in event.get("entity", []) if e.get("query")), None)
        if query:
            assert base64.b64decode(query)


def test_an_ehr_is_registered_with_the_npis_it_speaks_for(database_url, runtime, tmp_path):
    from click.testing import CliRunner

    from fhir_bridge.cli import main

    env = {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "x", "k": "c2VjcmV0"}]}))
    runner = CliRunner()
    base = ["clients", "add", "north-ehr", "--name", "North", "--role", "ehr"]
    base += ["--organization", "Organization/ehr-north", "--jwks-url", "https://north.example/jwks"]
    bad = runner.invoke(main, [*base, "--npi", "1407071237"], env=env)
    assert bad.exit_code != 0
    assert "1407071237" in bad.output
    added = runner.invoke(main, [*base, "--npi", NORTH_NPI], env=env)
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["npis"] == [NORTH_NPI]
    updated = runner.invoke(
        main, ["clients", "update", "north-ehr", "--npi", NORTH_NPI, "--npi", "1245319599"], env=env
    )
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.output)["npis"] == [NORTH_NPI, "1245319599"]
    cleared = runner.invoke(main, ["clients", "update", "north-ehr", "--clear-npis"], env=env)
    assert json.loads(cleared.output)["npis"] == []
    payer_npi = runner.invoke(
        main,
        [
            "clients",
            "add",
            "a-payer",
            "--name",
            "P",
            "--role",
            "payer",
            "--organization",
            "Organization/payer-a",
            "--jwks-url",
            "https://payer.example/jwks",
            "--npi",
            NORTH_NPI,
        ],
        env=env,
    )
    assert payer_npi.exit_code != 0
