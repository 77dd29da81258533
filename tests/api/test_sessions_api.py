"""POST/GET /api/v1/sessions: create, replace, retract, reject, and concurrent duplicates."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from fhir_bridge.records.openapi import EXAMPLE_RECORD
from fhir_bridge.store.db import read_session
from fhir_bridge.store.models import ClinicSession, InboundPayload, Resource, ResourceVersion
from tests.factories import patient, practitioner, service_request, store_all


def record(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE_RECORD)
    body.update(changes)
    return body


def post(client, body: Any):
    return client.post("/api/v1/sessions", data=json.dumps(body), content_type="application/json")


def counts(runtime) -> tuple[int, int, int]:
    with read_session(runtime.sessions) as s:
        return (
            s.execute(select(func.count()).select_from(Resource)).scalar_one(),
            s.execute(select(func.count()).select_from(ResourceVersion)).scalar_one(),
            s.execute(select(func.count()).select_from(ClinicSession)).scalar_one(),
        )


def ids(view: dict[str, Any], resource_type: str) -> list[str]:
    return [r["id"] for r in view["resources"] if r["resourceType"] == resource_type]


def test_create_then_replay_answers_201_then_200_with_the_same_resources(client, runtime):
    first = post(client, record())
    assert first.status_code == 201
    assert first.headers["Location"] == "/api/v1/sessions/MMC-2026-000123"
    created = counts(runtime)
    again = post(client, record())
    assert again.status_code == 200
    assert again.get_json()["resources"] == first.get_json()["resources"]
    assert counts(runtime) == created, "a replay must not write new versions"


def test_the_view_shows_record_resources_billing_and_flags(client):
    view = post(client, record()).get_json()
    assert view["record"] == EXAMPLE_RECORD
    assert view["status"] == "completed"
    assert {r["resourceType"] for r in view["resources"]} == {
        "Patient",
        "Practitioner",
        "Organization",
        "Coverage",
        "Goal",
        "Procedure",
        "Observation",
    }
    assert len(ids(view, "Observation")) == 6
    assert view["billing"] == [
        {"system": "http://www.ama-assn.org/go/cpt", "code": "97140", "minutes": 35, "units": 2},
        {"system": "http://www.ama-assn.org/go/cpt", "code": "97124", "minutes": 15, "units": 1},
    ]
    assert {f["code"] for f in view["flags"]} == {"referral-unknown", "payer-unknown"}


def test_everything_produced_is_readable_and_searchable_over_fhir(client):
    view = post(client, record()).get_json()
    (procedure_id,) = ids(view, "Procedure")
    proc = client.get(f"/fhir/Procedure/{procedure_id}").get_json()
    assert proc["status"] == "completed"
    patient_ref = proc["subject"]["reference"]
    found = client.get(f"/fhir/Observation?part-of=Procedure/{procedure_id}&_count=100").get_json()
    assert len(found["entry"]) == 6
    pain = client.get(
        f"/fhir/Observation?patient={patient_ref}&code=http://loinc.org|72514-3"
    ).get_json()
    assert sorted(e["resource"]["valueQuantity"]["value"] for e in pain["entry"]) == [4, 7]
    mrn = client.get(
        "/fhir/Patient?identifier=https://clinic.example.org/fhir/mrn|P-1001"
    ).get_json()
    assert mrn["entry"][0]["resource"]["name"][0]["family"] == "Rivera"


def test_the_body_is_kept_byte_for_byte(client, runtime):
    raw = json.dumps(EXAMPLE_RECORD, indent=3).encode()
    assert (
        client.post("/api/v1/sessions", data=raw, content_type="application/json").status_code
        == 201
    )
    with read_session(runtime.sessions) as s:
        assert s.execute(select(InboundPayload.body)).scalar_one() == raw
    assert client.get("/api/v1/sessions/MMC-2026-000123").get_json()["record"] == EXAMPLE_RECORD


def test_known_patient_therapist_and_referral_are_linked_not_duplicated(client, runtime):
    existing = patient("pat-rivera-ana", "P-1001", "Rivera", "Ana")
    store_all(
        runtime,
        [
            existing,
            practitioner("prac-lee-sam", "1234567893", "Lee", "Sam"),
            practitioner("drn", "1407071236", "Natarajan", "Priya"),
        ],
    )
    referral = service_request("sr-1", "pat-rivera-ana", "drn", placer="SR-8891")
    referral["identifier"][0]["system"] = "urn:oid:2.16.840.1.113883.19.5"
    store_all(runtime, [referral])
    view = post(client, record()).get_json()
    assert ids(view, "Patient") == ["pat-rivera-ana"]
    assert ids(view, "Practitioner") == ["prac-lee-sam"]
    assert "referral-unknown" not in {f["code"] for f in view["flags"]}
    (procedure_id,) = ids(view, "Procedure")
    proc = client.get(f"/fhir/Procedure/{procedure_id}").get_json()
    assert proc["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]
    assert proc["performer"][0]["actor"]["reference"] == "Practitioner/prac-lee-sam"


def test_retraction_marks_resources_entered_in_error_and_deletes_nothing(client, runtime):
    view = post(client, record()).get_json()
    before = counts(runtime)
    retracted = post(client, {"session_id": "MMC-2026-000123", "status": "entered-in-error"})
    assert retracted.status_code == 200
    assert retracted.get_json()["status"] == "entered-in-error"
    (procedure_id,) = ids(view, "Procedure")
    proc = client.get(f"/fhir/Procedure/{procedure_id}").get_json()
    assert proc["status"] == "entered-in-error"
    assert proc["meta"]["versionId"] == "2"
    for obs_id in ids(view, "Observation"):
        assert client.get(f"/fhir/Observation/{obs_id}").get_json()["status"] == "entered-in-error"
    resources, versions, _ = counts(runtime)
    assert resources == before[0]
    assert versions == before[1] + 7


def test_retracting_an_unknown_session_is_404(client):
    resp = post(client, {"session_id": "NOPE-1", "status": "entered-in-error"})
    assert resp.status_code == 404
    assert resp.get_json()["issue"][0]["expression"] == ["session_id"]


def test_a_replacement_that_drops_a_measurement_retracts_its_observation(client):
    view = post(client, record()).get_json()
    fewer = record(assessments=EXAMPLE_RECORD["assessments"][:4])
    replaced = post(client, fewer).get_json()
    dropped = set(ids(view, "Observation")) - set(ids(replaced, "Observation"))
    assert len(dropped) == 2
    for obs_id in dropped:
        assert client.get(f"/fhir/Observation/{obs_id}").get_json()["status"] == "entered-in-error"


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (
            {"treatments": [{"technique": "reiki", "minutes": 10}]},
            "treatments[0].technique",
            "mappings/",
        ),
        ({"started_at": "2026-11-20T10:00:00"}, "started_at", "offset"),
        ({"ended_at": "2026-11-20T09:00:00-05:00"}, "ended_at", ""),
        ({"therapist": {"npi": "1234567890"}}, "therapist.npi", ""),
        ({"diagnoses": ["M54.5"]}, "diagnoses[0]", "billable"),
    ],
)
def test_bad_records_answer_422_with_the_path_and_write_nothing(
    client, runtime, change, path, fragment
):
    resp = post(client, record(**change))
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    paths = [e for issue in body["issue"] for e in issue.get("expression", [])]
    assert path in paths
    assert fragment in " ".join(i["diagnostics"] for i in body["issue"])
    assert counts(runtime) == (0, 0, 0)


def test_every_problem_of_a_record_is_reported(client):
    bad = record()
    bad["treatments"] = [*bad["treatments"], {"technique": "swedish_massage", "minutes": 500}]
    bad["assessments"] = [*bad["assessments"], {"phase": "pre", "measure": "pain_nrs", "value": 11}]
    resp = post(client, bad)
    paths = {e for issue in resp.get_json()["issue"] for e in issue.get("expression", [])}
    assert {"treatments[3].minutes", "assessments[6].value"} <= paths


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"a": 1, "a": 2}', "application/json", 400),
        (b"session_id=1", "application/x-www-form-urlencoded", 415),
        (b"[1, 2]", "application/json", 422),
    ],
)
def test_unusable_bodies_are_4xx_outcomes(client, data, content_type, status):
    resp = client.post("/api/v1/sessions", data=data, content_type=content_type)
    assert resp.status_code == status
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_oversized_body_is_413(client):
    huge = record(notes={"subjective": "x" * (6 * 1024 * 1024)})
    resp = post(client, huge)
    assert resp.status_code == 413
    assert resp.get_json()["issue"][0]["code"] == "too-long"


def test_list_by_patient_and_since_with_paging(client):
    untimed = [{k: v for k, v in a.items() if k != "at"} for a in EXAMPLE_RECORD["assessments"]]
    for n in range(5):
        day = f"2026-11-{10 + n}"
        created = post(
            client,
            record(
                session_id=f"S-{n}",
                started_at=f"{day}T10:00:00-05:00",
                ended_at=f"{day}T10:55:00-05:00",
                assessments=untimed,
            ),
        )
        assert created.status_code == 201, created.get_json()
    other = record(session_id="S-other")
    other["patient"] = {"mrn": "P-2000", "family_name": "Okafor", "given_names": ["Chidi"]}
    post(client, other)
    page = client.get("/api/v1/sessions?patient=P-1001&since=2026-11-11&_count=2").get_json()
    assert [s["session_id"] for s in page["sessions"]] == ["S-1", "S-2"]
    nxt = client.get(page["next"]).get_json()
    assert [s["session_id"] for s in nxt["sessions"]] == ["S-3", "S-4"]
    assert "next" not in nxt
    assert (
        client.get("/api/v1/sessions?patient=P-2000").get_json()["sessions"][0]["session_id"]
        == "S-other"
    )
    assert client.get("/api/v1/sessions?patiant=x").status_code == 400


def test_unknown_session_is_404(client):
    assert client.get("/api/v1/sessions/NOPE").status_code == 404


def test_openapi_document_is_served(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/sessions" in spec["paths"]


def test_eight_concurrent_posts_of_one_record_leave_one_set_of_resources(app, runtime):
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        client = app.test_client()
        barrier.wait()
        status = post(client, record()).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(statuses) == [200] * 7 + [201]
    resources, versions, sessions = counts(runtime)
    assert sessions == 1
    assert resources == versions == 12  # 1 each: nothing was written twice
