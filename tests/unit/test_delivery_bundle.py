"""The partner's transaction Bundle (pure): shapes, conditional requests, stable fullUrls."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from fhir_bridge.fhir.ids import stable_id
from fhir_bridge.fhir.transaction import iter_references
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.mapping.delivery_bundle import (
    BundleInputError,
    conditional_url,
    referral_bundle,
    relative_references,
    session_bundle,
)
from fhir_bridge.mapping.referral_task import FILL_TYPE, add_output, new_task

BASE = "https://clinic.example.org/fhir"
NPI = "http://hl7.org/fhir/sid/us-npi"
GOLDEN = Path(__file__).parents[2] / "sample_bundles/sessions/expected/whiplash-neck-pain.json"
PLAC = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]}


def _stored(resource: dict[str, Any], version: int = 3) -> dict[str, Any]:
    """The resource as the store serves it (meta.versionId / lastUpdated set)."""
    meta = {"versionId": str(version), "lastUpdated": "2026-11-24T14:55:00Z"}
    return {**resource, "meta": {**meta, **resource.get("meta", {})}}


def _visit() -> dict[str, Any]:
    """The whiplash golden visit, as stored, based on referral ServiceRequest/sr-1."""
    resources = [_stored(r) for r in json.loads(GOLDEN.read_text())["resources"]]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    [procedure] = by_type["Procedure"]
    procedure["basedOn"] = [{"reference": "ServiceRequest/sr-1"}]
    task = new_task(
        service_request_id="sr-1",
        service_request=service_request(),
        owner={"reference": "Organization/clinic", "display": "The clinic"},
        task_identifier={"type": FILL_TYPE, "system": f"{BASE}/referral-task", "value": "sr-1"},
        now=datetime(2026, 11, 20, 10, 0),
    )
    task = add_output(
        {**task, "id": "task-1", "status": "in-progress"},
        f"Procedure/{procedure['id']}",
        now=datetime(2026, 11, 24, 15, 0),
    )
    task = add_output(task, "Procedure/earlier-visit", now=datetime(2026, 11, 24, 15, 0))
    task["for"] = {"reference": procedure["subject"]["reference"]}
    [practitioner] = by_type["Practitioner"]
    return {
        "patient": by_type["Patient"][0],
        "procedure": procedure,
        "observations": by_type["Observation"],
        "goals": by_type["Goal"],
        "task": _stored(task),
        "linked": {
            f"Practitioner/{practitioner['id']}": practitioner,
            "ServiceRequest/sr-1": service_request(),
            "Organization/clinic": {
                "resourceType": "Organization",
                "id": "clinic",
                "identifier": [{"system": NPI, "value": "1245319599"}],
            },
            "Practitioner/dr-natarajan": {
                "resourceType": "Practitioner",
                "id": "dr-natarajan",
                "identifier": [{"system": NPI, "value": "1407071236"}],
            },
            "Procedure/earlier-visit": {
                "resourceType": "Procedure",
                "id": "earlier-visit",
                "identifier": [{"system": f"{BASE}/session", "value": "V-0/procedure"}],
            },
        },
    }


def service_request() -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "identifier": [
            {"system": "urn:ehr:other", "value": "other"},
            {"type": PLAC, "system": "urn:oid:2.16.840.1.113883.19.5", "value": "SR-8891"},
        ],
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/de750807-869d-5411-b685-71f38b0ef1c9"},
        "requester": {"reference": "Practitioner/dr-natarajan", "display": "Dr. Natarajan"},
    }


def _build(**changes: Any) -> dict[str, Any]:
    return session_bundle(**{**_visit(), **changes}, clinic_system_base=BASE)


def _errors(resource: Any) -> list[Any]:
    return [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]


def test_the_session_bundle_is_a_valid_transaction_in_dependency_order():
    bundle = _build()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert _errors(bundle) == []
    for entry in bundle["entry"]:
        assert _errors(entry["resource"]) == [], entry["request"]["url"]
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Patient", "Goal", "Procedure", *["Observation"] * 9, "Task"]


def test_patient_is_a_conditional_create_and_the_rest_conditional_updates():
    entries = _build()["entry"]
    assert entries[0]["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": f"identifier={BASE}/mrn|P-1001",
    }
    urls = [e["request"]["url"] for e in entries[1:]]
    assert {e["request"]["method"] for e in entries[1:]} == {"PUT"}
    assert urls[0] == f"Goal?identifier={BASE}/goal|P-1001/G2"
    assert urls[1] == f"Procedure?identifier={BASE}/session|MMC-2026-000201/procedure"
    assert all(u.startswith(f"Observation?identifier={BASE}/session|MMC-") for u in urls[2:-1])
    assert urls[-1] == f"Task?identifier={BASE}/referral-task|sr-1"


def test_fullurls_are_uuid5_of_the_key_identifier_and_references_point_at_them():
    bundle = _build()
    patient, goal, procedure, *observations, task = bundle["entry"]
    assert patient["fullUrl"] == "urn:uuid:" + stable_id("Patient", f"{BASE}/mrn", "P-1001")
    assert UUID(procedure["fullUrl"].removeprefix("urn:uuid:")).version == 5
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        for path, value in iter_references(entry["resource"]):
            assert value in full_urls, (entry["request"]["url"], path, value)
    assert procedure["resource"]["subject"] == {"reference": patient["fullUrl"]}
    assert observations[0]["resource"]["partOf"] == [{"reference": procedure["fullUrl"]}]
    assert task["resource"]["for"] == {"reference": patient["fullUrl"]}
    assert task["resource"]["output"][0]["valueReference"] == {"reference": procedure["fullUrl"]}
    goal_refs = [
        x["valueReference"]
        for x in procedure["resource"]["extension"]
        if x["url"].endswith("pertainsToGoal")
    ]
    assert goal_refs == [{"reference": goal["fullUrl"]}]


def test_resources_not_sent_are_named_by_identifier():
    procedure, task = _build()["entry"][2]["resource"], _build()["entry"][-1]["resource"]
    assert procedure["performer"][0]["actor"] == {
        "type": "Practitioner",
        "identifier": {"system": NPI, "value": "1234567893"},
    }
    # the placer identifier, not the first one
    assert procedure["basedOn"][0]["identifier"]["value"] == "SR-8891"
    assert task["focus"]["identifier"]["value"] == "SR-8891"
    assert task["owner"] == {
        "display": "The clinic",
        "type": "Organization",
        "identifier": {"system": NPI, "value": "1245319599"},
    }
    assert task["output"][1]["valueReference"]["identifier"] == {
        "system": f"{BASE}/session",
        "value": "V-0/procedure",
    }


def test_a_reference_to_an_unknown_resource_keeps_only_type_and_display():
    visit = _visit()
    visit["linked"] = {}
    task = session_bundle(**visit, clinic_system_base=BASE)["entry"][-1]["resource"]
    assert task["owner"] == {"display": "The clinic", "type": "Organization"}
    assert _errors(task) == []


def test_ids_and_version_meta_are_dropped_everything_else_kept():
    for entry in _build()["entry"]:
        resource = entry["resource"]
        assert "id" not in resource
        assert set(resource.get("meta", {})) <= {"profile", "tag", "security", "source"}
    procedure = _build()["entry"][2]["resource"]
    assert procedure["meta"] == {
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"]
    }
    assert procedure["text"]["status"] == "generated"


def test_identical_input_gives_identical_output_and_the_input_is_untouched():
    visit = _visit()
    before = copy.deepcopy(visit)
    first = session_bundle(**visit, clinic_system_base=BASE)
    assert visit == before
    shuffled = {
        **visit,
        "observations": list(reversed(visit["observations"])),
        "goals": visit["goals"] * 2,
    }
    again = session_bundle(**shuffled, clinic_system_base=BASE)
    assert json.dumps(first, sort_keys=False) == json.dumps(again, sort_keys=False)


def _containers(node: Any) -> list[Any]:
    """Every dict and list inside ``node``."""
    if isinstance(node, dict):
        return [node, *(c for v in node.values() for c in _containers(v))]
    if isinstance(node, list):
        return [node, *(c for v in node for c in _containers(v))]
    return []


def test_the_bundle_shares_no_dict_or_list_with_its_input():
    visit = _visit()
    visit["procedure"]["contained"] = [{"resourceType": "Device", "id": "d1"}]
    visit["procedure"]["performer"][0]["actor"]["extension"] = [{"url": "x", "valueString": "y"}]
    before = copy.deepcopy(visit)
    bundle = session_bundle(**visit, clinic_system_base=BASE)
    inputs = {id(c) for c in _containers(visit)}
    assert not [c for c in _containers(bundle) if id(c) in inputs]
    for container in _containers(bundle):  # so changing the output never changes the input
        container.clear()
    assert visit == before


def test_a_visit_without_referral_has_no_task():
    bundle = _build(task=None)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]][-1] == "Observation"
    assert _errors(bundle) == []


def test_a_resource_without_its_key_identifier_is_refused():
    visit = _visit()
    visit["observations"][0] = {**visit["observations"][0], "identifier": []}
    with pytest.raises(BundleInputError, match="Observation"):
        session_bundle(**visit, clinic_system_base=BASE)
    visit = _visit()
    visit["patient"] = {**visit["patient"], "identifier": [{"system": "urn:x", "value": "1"}]}
    with pytest.raises(BundleInputError, match="mrn"):
        session_bundle(**visit, clinic_system_base=BASE)


def test_referral_bundle_is_our_task_by_its_fill_identifier():
    visit = _visit()
    bundle = referral_bundle(task=visit["task"], linked=visit["linked"], clinic_system_base=BASE)
    assert _errors(bundle) == []
    [entry] = bundle["entry"]
    assert entry["request"] == {
        "method": "PUT",
        "url": f"Task?identifier={BASE}/referral-task|sr-1",
    }
    assert entry["fullUrl"] == "urn:uuid:" + stable_id("Task", f"{BASE}/referral-task", "sr-1")
    # the patient is not in this Bundle: named by identifier (the clinic MRN is all it has)
    assert entry["resource"]["for"]["type"] == "Patient"
    assert "reference" not in entry["resource"]["for"]
    assert entry["resource"]["requester"]["identifier"] == {"system": NPI, "value": "1407071236"}


def test_an_ehrs_own_task_is_keyed_on_the_ehrs_identifier():
    task = {
        "resourceType": "Task",
        "id": "t-ehr",
        "meta": {"versionId": "2", "lastUpdated": "2026-11-24T14:55:00Z"},
        "identifier": [{"system": "https://ehr.example.org/task", "value": "T 1,$|x"}],
        "status": "accepted",
        "intent": "order",
        "focus": {"reference": "https://ehr.example.org/fhir/ServiceRequest/99"},
    }
    bundle = referral_bundle(task=task, clinic_system_base=BASE)
    [entry] = bundle["entry"]
    # FHIR search escaping (\, \$ \|) then percent-encoding; absolute references are kept
    assert entry["request"]["url"] == conditional_url(
        "Task", "https://ehr.example.org/task", "T 1,$|x"
    )
    assert entry["request"]["url"] == (
        "Task?identifier=https://ehr.example.org/task|T%201%5C%2C%5C%24%5C%7Cx"
    )
    assert entry["resource"]["focus"] == task["focus"]
    assert "meta" not in entry["resource"]
    with pytest.raises(BundleInputError, match="Task"):
        referral_bundle(task={**task, "identifier": []}, clinic_system_base=BASE)


def test_relative_references_skips_contained_absolute_and_urn():
    found = relative_references(
        [
            {
                "resourceType": "Task",
                "contained": [
                    {
                        "resourceType": "Patient",
                        "managingOrganization": {"reference": "Organization/x"},
                    }
                ],
                "for": {"reference": "Patient/p/_history/2"},
                "focus": {"reference": "https://ehr.example.org/fhir/ServiceRequest/1"},
                "owner": {"reference": "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"},
                "requester": {"reference": "#pr"},
            }
        ]
    )
    assert found == {"Patient/p"}
