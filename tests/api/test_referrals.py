"""Referral intake end to end: shapes, idempotency, the inbox, the Task state machine, visits."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
from sqlalchemy import text

from fhir_bridge.records.openapi import EXAMPLE_RECORD
from tests.factories import NPI, patient, practitioner, store_all

FHIR_JSON = "application/fhir+json"
PLACER = "urn:oid:2.16.840.1.113883.19.5"
MRN = "https://clinic.example.org/fhir/mrn"
EHR_MRN = "urn:oid:2.16.840.1.113883.19.5.2"
PLAC_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]
}


def referral(placer: str = "SR-8891", **changes: Any) -> dict[str, Any]:
    """A bare whiplash referral for the patient and physician on file (see ``on_file``)."""
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"type": PLAC_TYPE, "system": PLACER, "value": placer}],
        "status": "active",
        "intent": "order",
        "code": {
            "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97124"}],
            "text": "Medical massage, neck and shoulders",
        },
        "subject": {"reference": "Patient/pat-rivera"},
        "requester": {"reference": "Practitioner/dr-natarajan"},
        "authoredOn": "2026-11-10",
        "reasonCode": [
            {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "S13.4XXA"}]}
        ],
        "occurrenceTiming": {
            "repeat": {
                "count": 2,
                "frequency": 2,
                "period": 1,
                "periodUnit": "wk",
                "boundsPeriod": {"start": "2026-11-10", "end": "2026-12-31"},
            }
        },
    }
    body.update(changes)
    return body


@pytest.fixture
def on_file(runtime):
    """The patient (clinic MRN P-1001, the session example's) and the referring physician."""
    store_all(
        runtime,
        [
            patient("pat-rivera", "P-1001", "Rivera", "Ana"),
            practitioner("dr-natarajan", "1407071236", "Natarajan", "Priya"),
        ],
    )


def post(client, path: str, body: Any, **headers: str):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, content_type=FHIR_JSON, headers=headers)


def inbox(client, **params: str) -> list[dict[str, Any]]:
    resp = client.get("/api/v1/referrals", query_string=params)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["referrals"]


def count(runtime, table: str, where: str = "") -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar_one()


def events(runtime) -> list[str]:
    with runtime.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT event_type FROM outbox_event ORDER BY pk"))]


def expressions(resp) -> list[str]:
    return [e for issue in resp.get_json()["issue"] for e in issue.get("expression", [])]


# --- intake --------------------------------------------------------------------------------


def test_a_bare_referral_lands_in_the_inbox_with_a_task_and_an_event(client, runtime, on_file):
    resp = post(client, "/fhir/ServiceRequest", referral())
    assert resp.status_code == 201
    sr_id = resp.get_json()["id"]
    [row] = inbox(client)
    assert row["id"] == sr_id
    assert row["status"] == "requested"
    assert row["allowed_actions"] == ["accept", "decline"]
    assert row["patient"] == "Patient/pat-rivera"
    assert row["patient_match"] == "reference"
    assert row["requester"] == {"reference": "Practitioner/dr-natarajan", "npi": "1407071236"}
    assert row["prescribed"] == {"visits": 2, "frequency": "2 per week", "expires_on": "2026-12-31"}
    assert (row["visits_used"], row["visits_left"]) == (0, 2)
    assert [w["expression"] for w in row["warnings"]] == [["ServiceRequest.insurance"]]
    task = client.get(f"/fhir/{row['task']}").get_json()
    assert task["status"] == "requested"
    assert task["focus"] == {"reference": f"ServiceRequest/{sr_id}"}
    assert task["for"] == {"reference": "Patient/pat-rivera"}
    assert task["code"]["coding"][0]["code"] == "fulfill"
    assert events(runtime) == ["referral.received"]


def test_warnings_come_back_with_the_write_when_asked_for(client, on_file):
    resp = post(client, "/fhir/ServiceRequest", referral(), Prefer="return=OperationOutcome")
    assert resp.status_code == 201
    issues = resp.get_json()["issue"]
    assert issues[0]["severity"] == "information"
    assert [(i["severity"], i["expression"]) for i in issues[1:]] == [
        ("warning", ["ServiceRequest.insurance"])
    ]


def test_a_retry_answers_200_with_the_same_referral_and_a_change_is_a_new_version(
    client, runtime, on_file
):
    first = post(client, "/fhir/ServiceRequest", referral())
    again = post(client, "/fhir/ServiceRequest", referral())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["ETag"] == 'W/"1"'
    changed = referral()
    changed["occurrenceTiming"]["repeat"]["count"] = 6
    updated = post(client, "/fhir/ServiceRequest", changed)
    assert updated.status_code == 200
    assert updated.get_json()["id"] == first.get_json()["id"]
    assert updated.headers["ETag"] == 'W/"2"'
    [row] = inbox(client)
    assert row["prescribed"]["visits"] == 6
    assert count(runtime, "resource", "WHERE resource_type = 'Task'") == 1
    assert events(runtime) == ["referral.received", "referral.updated"]


def test_eight_concurrent_copies_make_one_referral(app, runtime, on_file):
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    ids: set[str] = set()
    lock = threading.Lock()

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        resp = post(client, "/fhir/ServiceRequest", referral("SR-RACE"))
        with lock:
            statuses.append(resp.status_code)
            ids.add(resp.get_json().get("id", "?"))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 7 + [201]
    assert len(ids) == 1
    assert count(runtime, "resource", "WHERE resource_type = 'ServiceRequest'") == 1
    assert count(runtime, "resource", "WHERE resource_type = 'Task'") == 1
    assert count(runtime, "referral") == 1
    assert events(runtime) == ["referral.received"]


def test_a_contained_patient_is_matched_on_identifier_or_created_not_guessed(client, runtime):
    store_all(runtime, [practitioner("dr-natarajan", "1407071236", "Natarajan", "Priya")])
    contained = {
        "resourceType": "Patient",
        "id": "pat",
        "identifier": [{"system": EHR_MRN, "value": "E-77"}],
        "name": [{"family": "Okafor", "given": ["Grace"]}],
        "gender": "female",
        "birthDate": "1968-02-02",
    }
    first = referral("SR-C1", contained=[contained], subject={"reference": "#pat"})
    resp = post(client, "/fhir/ServiceRequest", first)
    assert resp.status_code == 201
    stored = resp.get_json()
    [row] = inbox(client)
    assert row["patient_match"] == "created"
    # linked to the Patient made from it, so the referral is in the patient's compartment
    assert stored["subject"] == {"reference": row["patient"]}
    assert "contained" not in stored
    found = client.get(f"/fhir/ServiceRequest?patient={row['patient']}").get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [stored["id"]]
    everything = client.get(f"/fhir/{row['patient']}/$everything").get_json()
    assert stored["id"] in {e["resource"]["id"] for e in everything["entry"]}
    revinclude = client.get(
        f"/fhir/Patient?_id={row['patient'].split('/')[1]}&_revinclude=ServiceRequest:patient"
    ).get_json()
    assert stored["id"] in {e["resource"]["id"] for e in revinclude["entry"]}
    created = client.get(f"/fhir/{row['patient']}").get_json()
    assert created["identifier"] == contained["identifier"]
    assert created["name"] == contained["name"]
    second = referral("SR-C2", contained=[contained], subject={"reference": "#pat"})
    assert post(client, "/fhir/ServiceRequest", second).status_code == 201
    rows = inbox(client)
    assert rows[1]["patient"] == row["patient"]
    assert rows[1]["patient_match"] == "identifier"
    assert count(runtime, "resource", "WHERE resource_type = 'Patient'") == 1


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"intent": "plan"}, "ServiceRequest.intent"),
        ({"status": "draft"}, "ServiceRequest.status"),
        ({"identifier": [{"system": PLACER, "value": "SR-1"}]}, "ServiceRequest.identifier"),
        (
            {"requester": {"identifier": {"system": NPI, "value": "9941339108"}}},
            "ServiceRequest.requester.identifier.value",
        ),
        (
            {
                "reasonCode": [
                    {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.5"}]}
                ]
            },
            "ServiceRequest.reasonCode[0].coding[0].code",
        ),
    ],
)
def test_an_unusable_prescription_is_refused_with_the_element_and_nothing_kept(
    client, runtime, on_file, change, expression
):
    resp = post(client, "/fhir/ServiceRequest", referral(**change))
    assert resp.status_code == 422
    assert resp.get_json()["resourceType"] == "OperationOutcome"
    assert expression in expressions(resp)
    assert count(runtime, "referral") == 0
    assert (
        count(
            runtime,
            "resource",
            "WHERE resource_type <> 'Patient' AND resource_type <> 'Practitioner'",
        )
        == 0
    )


def test_a_transaction_whose_referral_fails_its_rules_leaves_nothing(client, runtime):
    sr = referral(status="draft")
    sr["subject"] = {"reference": "urn:uuid:1b1e7d4c-0000-4000-8000-000000000001"}
    sr["requester"] = {"identifier": {"system": NPI, "value": "1407071236"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:1b1e7d4c-0000-4000-8000-000000000001",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": EHR_MRN, "value": "E-9"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}},
        ],
    }
    resp = post(client, "/fhir", bundle)
    assert resp.status_code == 422
    errors = [i["expression"] for i in resp.get_json()["issue"] if i["severity"] == "error"]
    assert errors == [["Bundle.entry[1].resource.ofType(ServiceRequest).status"]]
    for table in ("resource", "referral", "outbox_event", "inbound_payload"):
        assert count(runtime, table) == 0


# --- Tasks the EHR sends --------------------------------------------------------------------


def task_for(focus: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "identifier": [{"system": PLACER, "value": "T-8891"}],
        "status": "requested",
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": focus},
        "for": {"reference": "Patient/pat-rivera"},
        "authoredOn": "2026-11-10T09:00:00-05:00",
        "requester": {"reference": "Practitioner/dr-natarajan"},
    }


def test_the_ehrs_own_task_takes_over_from_ours_and_a_resend_changes_nothing(
    client, runtime, on_file
):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    ours = inbox(client)[0]["task"]
    resp = post(client, "/fhir/Task", task_for(f"ServiceRequest/{sr_id}"))
    assert resp.status_code == 201
    theirs = f"Task/{resp.get_json()['id']}"
    [row] = inbox(client)
    assert row["task"] == theirs
    assert client.get(f"/fhir/{ours}").get_json()["status"] == "cancelled"
    again = post(client, "/fhir/Task", task_for(f"ServiceRequest/{sr_id}"))
    assert again.status_code == 200
    assert f"Task/{again.get_json()['id']}" == theirs


def test_a_task_for_a_request_nobody_has_is_refused_at_its_focus(client, on_file):
    resp = post(client, "/fhir/Task", task_for("ServiceRequest/unknown"))
    assert resp.status_code == 422
    assert expressions(resp) == ["Task.focus"]


# --- the clinic's actions --------------------------------------------------------------------


def act(client, sr_id: str, action: str, body: Any = None):
    data = json.dumps(body) if body is not None else None
    return client.post(
        f"/api/v1/referrals/{sr_id}/{action}", data=data, content_type="application/json"
    )


def test_accept_then_complete_moves_the_task_and_tells_the_physician(client, runtime, on_file):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    accepted = act(client, sr_id, "accept")
    assert accepted.status_code == 200
    assert accepted.get_json()["status"] == "accepted"
    task = client.get(f"/fhir/{accepted.get_json()['task']}").get_json()
    assert task["status"] == "accepted"
    assert task["businessStatus"]["coding"][0]["code"] == "3.0"
    assert task["meta"]["versionId"] == "2"
    again = act(client, sr_id, "accept")
    assert again.status_code == 409
    assert again.get_json()["issue"][0]["expression"] == ["action"]
    done = act(client, sr_id, "complete")
    assert done.get_json()["status"] == "completed"
    assert events(runtime) == ["referral.received", "referral.accepted", "referral.completed"]


def test_decline_needs_a_reason_and_records_it(client, runtime, on_file):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    missing = act(client, sr_id, "decline", {})
    assert missing.status_code == 422
    assert missing.get_json()["issue"][0]["expression"] == ["reason"]
    declined = act(client, sr_id, "decline", {"reason": "Outside our scope: needs PT"})
    assert declined.status_code == 200
    task = client.get(f"/fhir/{declined.get_json()['task']}").get_json()
    assert (task["status"], task["statusReason"]["text"]) == (
        "rejected",
        "Outside our scope: needs PT",
    )
    assert act(client, sr_id, "accept").status_code == 409
    assert act(client, sr_id, "complete").status_code == 409


@pytest.mark.parametrize("action", ["complete"])
def test_a_requested_referral_cannot_be_completed(client, on_file, action):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    resp = act(client, sr_id, action)
    assert resp.status_code == 409
    assert "accept" in resp.get_json()["issue"][0]["diagnostics"]


def test_unknown_referral_or_action_is_404(client, on_file):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    assert act(client, "nope", "accept").status_code == 404
    assert act(client, sr_id, "approve").status_code == 404


def test_inbox_filters_by_status_patient_and_requester(client, runtime, on_file):
    store_all(runtime, [patient("pat-2", "P-2002", "Okafor", "Grace")])
    a = post(client, "/fhir/ServiceRequest", referral("SR-A")).get_json()["id"]
    post(client, "/fhir/ServiceRequest", referral("SR-B", subject={"reference": "Patient/pat-2"}))
    act(client, a, "accept")
    assert [r["id"] for r in inbox(client, status="accepted")] == [a]
    assert len(inbox(client, status="requested")) == 1
    assert [r["patient"] for r in inbox(client, patient="pat-2")] == ["Patient/pat-2"]
    assert len(inbox(client, requester="1407071236")) == 2
    assert len(inbox(client, requester="Practitioner/dr-natarajan")) == 2
    assert inbox(client, requester="1234567893") == []
    page = client.get("/api/v1/referrals", query_string={"_count": 1}).get_json()
    assert len(page["referrals"]) == 1
    rest = client.get(page["next"]).get_json()
    assert len(rest["referrals"]) == 1
    assert client.get("/api/v1/referrals?colour=red").status_code == 400


# --- visits ----------------------------------------------------------------------------------


def session(session_id: str) -> dict[str, Any]:
    """The contract's example visit (referral SR-8891, patient P-1001) under another id."""
    body = copy.deepcopy(EXAMPLE_RECORD)
    body["session_id"] = session_id
    return body


def post_session(client, body: dict[str, Any]):
    return client.post("/api/v1/sessions", data=json.dumps(body), content_type="application/json")


def test_visits_count_move_the_task_and_fill_its_outputs(client, runtime, on_file):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    act(client, sr_id, "accept")
    first = post_session(client, session("V-1"))
    assert first.status_code == 201, first.get_json()
    assert not [f for f in first.get_json()["flags"] if f["code"].startswith("referral-")]
    [row] = inbox(client)
    assert (row["status"], row["visits_used"], row["visits_left"]) == ("in-progress", 1, 1)
    task = client.get(f"/fhir/{row['task']}").get_json()
    [procedure] = [
        r["id"] for r in first.get_json()["resources"] if r["resourceType"] == "Procedure"
    ]
    assert task["output"][0]["valueReference"] == {"reference": f"Procedure/{procedure}"}
    assert task["output"][0]["type"]["coding"][0]["code"] == "resulting-activity"
    # a replay changes nothing and tells nobody twice
    assert post_session(client, session("V-1")).status_code == 200
    assert events(runtime).count("referral.visit-documented") == 1
    post_session(client, session("V-2"))
    third = post_session(client, session("V-3"))
    assert third.status_code == 201, third.get_json()
    assert "referral-visits-exceeded" in [f["code"] for f in third.get_json()["flags"]]
    assert inbox(client)[0]["visits_used"] == 3
    # retracting a visit takes it off the count and out of the Task
    retract = post_session(client, {"session_id": "V-3", "status": "entered-in-error"})
    assert retract.status_code == 200
    [row] = inbox(client)
    assert row["visits_used"] == 2
    task = client.get(f"/fhir/{row['task']}").get_json()
    assert len(task["output"]) == 2


def test_a_visit_before_acceptance_is_kept_and_flagged(client, on_file):
    post(client, "/fhir/ServiceRequest", referral())
    resp = post_session(client, session("V-9"))
    assert resp.status_code == 201
    assert "referral-not-accepted" in [f["code"] for f in resp.get_json()["flags"]]
    assert inbox(client)[0]["visits_used"] == 1


def test_tasks_are_searchable_by_requester_and_last_updated_with_their_focus(client, on_file):
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    resp = client.get(
        "/fhir/Task",
        query_string={
            "requester": "Practitioner/dr-natarajan",
            "_lastUpdated": "gt2026-01-01",
            "_include": "Task:focus",
        },
    )
    assert resp.status_code == 200
    found = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in resp.get_json()["entry"]}
    assert found == {("Task", "match"), ("ServiceRequest", "include")}
    [sr] = [
        e["resource"]
        for e in resp.get_json()["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    ]
    assert sr["id"] == sr_id


def test_overlong_identifiers_and_codes_are_refused_or_kept_never_a_500(client, runtime, on_file):
    long = "x" * 600
    placer = referral()
    placer["identifier"][0]["value"] = long
    resp = post(client, "/fhir/ServiceRequest", placer)
    assert resp.status_code == 422
    assert "ServiceRequest.identifier" in expressions(resp)
    coded = referral("SR-LONG")
    coded["code"]["coding"].append({"system": "http://example.org/" + long, "code": long})
    assert post(client, "/fhir/ServiceRequest", coded).status_code == 201
