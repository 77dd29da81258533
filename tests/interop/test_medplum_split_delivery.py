"""A partner's delivery shape against the Medplum peer: a visit larger than the partner's Bundle
limit arrives as ordered transactions, once, with its references resolved; ``batch`` partners
get batches whose per-entry statuses are checked.

The peer enforces Medplum's own limit here (at most 8 entries in a conditional transaction,
"Transaction requires strict isolation but has too many entries") and resolves conditional
references (``Patient?identifier=...``) as Medplum's server does.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import requests

from fhir_bridge.mapping.delivery_split import shape_payload
from fhir_bridge.services import partners as partner_service
from fhir_bridge.services.runtime import Runtime
from tests.api.test_referrals import act, on_file, post, post_session, referral, session  # noqa: F401
from tests.interop.peer import MedplumPeer
from tests.interop.test_medplum_delivery import (
    bundles,
    drain,
    keys,
    literal_references,
    mrn_system,
    register,
    rows,
    versions,
    worker,
)

TYPES = {"Patient", "Goal", "Procedure", "Observation", "Task"}


def big_visit(session_id: str = "V-1") -> dict[str, Any]:
    """The contract's example visit (6 measurements) with a second goal."""
    body = session(session_id)
    assert len(body["assessments"]) == 6
    body["goals"] = [
        *body["goals"],
        {
            "goal_id": "G2",
            "description": "Sleep through the night",
            "measure": "sleep_quality_nrs",
            "target": 7,
            "due": "2026-12-31",
        },
    ]
    return body


def documented_big_visit(client: Any) -> None:
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    assert act(client, sr_id, "accept").status_code == 200
    resp = post_session(client, big_visit())
    assert resp.status_code == 201, resp.get_json()


def shape(runtime: Runtime, *, max_entries: int | None, bundle_type: str = "transaction"):
    partner_service.set_delivery_shape(
        runtime, "medplum", max_bundle_entries=max_entries, bundle_type=bundle_type
    )


def assert_complete_once_and_resolved(medplum: MedplumPeer, sent: dict[str, Any]) -> None:
    """Every entry at the peer exactly once; every reference resolves to a peer resource."""
    for resource_type, system, value in keys([sent]):
        assert medplum.count(resource_type, system, value) == 1, (resource_type, value)
    [patient] = medplum.search("Patient")
    [procedure] = medplum.search("Procedure")
    assert procedure["subject"]["reference"] == f"Patient/{patient['id']}"
    observations = medplum.search("Observation")
    assert len(observations) == sum(
        e["resource"]["resourceType"] == "Observation" for e in sent["entry"]
    )
    for observation in observations:
        assert observation["subject"]["reference"] == f"Patient/{patient['id']}"
        assert [p["reference"] for p in observation.get("partOf", [])] in (
            [],
            [f"Procedure/{procedure['id']}"],
        )
    assert len(medplum.search("Goal")) == 2
    for resource_type in TYPES:
        for resource in medplum.search(resource_type):
            for ref in literal_references(resource):
                assert not ref.startswith("urn:uuid:"), (resource_type, ref)
                assert "?" not in ref, (resource_type, ref)  # conditional ones resolved
                medplum.get(ref)  # resolves at the peer


def test_a_visit_over_the_partners_limit_arrives_split_once_with_references_intact(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    medplum.limit_strict_transactions(8)  # Medplum's limit
    register(runtime, medplum.base, ["session.documented"])
    documented_big_visit(client)

    # without the partner's limit the Bundle is refused, as a real Medplum refuses it
    assert worker(runtime).run_once() == 1
    [row] = rows(runtime)
    assert (row.status, row.last_status) == ("dead", 400)
    assert "too many entries" in json.loads(row.outcome)["issue"][0]["details"]["text"]
    [sent] = bundles(runtime)
    assert len(sent["entry"]) > 8  # Patient, 2 Goals, Procedure, 6+ Observations, Task
    assert medplum.total("Patient") == medplum.total("Procedure") == 0

    # the operator sets the partner's limit and resends the dead letter
    shape(runtime, max_entries=8)
    resp = client.get("/api/v1/partners/medplum").get_json()
    assert resp["delivery"] == {"max_bundle_entries": 8, "bundle_type": "transaction"}
    assert client.post(f"/api/v1/deliveries/{row.pk}/retry").status_code == 200
    assert drain(worker(runtime)) == 1
    [row] = rows(runtime)
    assert (row.status, row.last_status) == ("delivered", 200), row.last_error
    stats = medplum.stats()
    parts = -(-len(sent["entry"]) // 8)
    assert stats["transactions"] == 1 + parts  # the refused one, then one per part
    assert {s for s in stats["byStatus"] if not s.startswith("2")} == {"400"}
    assert_complete_once_and_resolved(medplum, sent)

    # re-delivery (a crash after the send): the same parts again change nothing
    before = versions(medplum, TYPES)
    for part in shape_payload(row.payload, max_entries=8, bundle_type="transaction"):
        again = requests.post(
            medplum.base, data=part, headers={"Content-Type": "application/fhir+json"}, timeout=30
        )
        assert again.status_code == 200, again.text[:2000]
        assert {e["response"]["status"] for e in again.json()["entry"]} == {"200"}
    assert versions(medplum, TYPES) == before
    assert_complete_once_and_resolved(medplum, sent)
    assert worker(runtime).run_once() == 0

    # a second visit: the Patient and Goals are matched, not created again
    second = big_visit("V-2")
    assert post_session(client, second).status_code == 201
    assert drain(worker(runtime)) == 1
    assert medplum.total("Patient") == 1
    assert medplum.total("Procedure") == 2
    assert medplum.total("Goal") == 2
    for resource_type, system, value in keys(bundles(runtime)):
        assert medplum.count(resource_type, system, value) == 1, (resource_type, value)


def test_a_batch_partner_gets_ordered_batches_and_the_visit_once(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    medplum.limit_strict_transactions(8)
    register(runtime, medplum.base, ["session.documented"])
    shape(runtime, max_entries=8, bundle_type="batch")
    documented_big_visit(client)
    assert drain(worker(runtime)) == 1
    [row] = rows(runtime)
    assert (row.status, row.last_status) == ("delivered", 200), row.last_error
    stats = medplum.stats()
    assert stats["transactions"] == 0
    assert stats["batches"] >= 3
    [sent] = bundles(runtime)
    assert_complete_once_and_resolved(medplum, sent)

    before = versions(medplum, TYPES)
    for part in shape_payload(row.payload, max_entries=8, bundle_type="batch"):
        again = requests.post(
            medplum.base, data=part, headers={"Content-Type": "application/fhir+json"}, timeout=30
        )
        assert {e["response"]["status"] for e in again.json()["entry"]} == {"200"}
    assert versions(medplum, TYPES) == before


def test_a_failed_batch_entry_fails_the_delivery_with_its_outcome(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    register(runtime, medplum.base, ["session.documented"])
    shape(runtime, max_entries=None, bundle_type="batch")
    # two Patients with the clinic's MRN: the Patient's conditional create is ambiguous
    twin = {
        "resourceType": "Patient",
        "identifier": [{"system": mrn_system(runtime), "value": "P-1001"}],
    }
    ids = [medplum.post("Patient", copy.deepcopy(twin)).json()["id"] for _ in range(2)]
    documented_big_visit(client)
    assert worker(runtime).run_once() == 1
    [row] = rows(runtime)
    assert (row.status, row.last_status) == ("dead", 412)
    assert "part 1 of" in row.last_error
    assert "batch entry 1" in row.last_error
    outcome = json.loads(row.outcome)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "multiple-matches"
    # the later parts (which reference the Patient) were not sent
    assert medplum.total("Procedure") == medplum.total("Observation") == 0

    # the partner fixes its data; the operator resends; the visit arrives once
    assert requests.delete(f"{medplum.base}/Patient/{ids[1]}", timeout=10).status_code == 200
    assert client.post(f"/api/v1/deliveries/{row.pk}/retry").status_code == 200
    assert drain(worker(runtime)) == 1
    [row] = rows(runtime)
    assert row.status == "delivered", row.last_error
    [sent] = bundles(runtime)
    assert_complete_once_and_resolved(medplum, sent)
    assert medplum.search("Patient")[0]["id"] == ids[0]
