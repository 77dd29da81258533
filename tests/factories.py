"""Small builders of realistic FHIR R4 resources for tests, and a helper to store them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore, StoredResource

MRN = "https://clinic.example.org/fhir/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
PLACER = "https://ehr.northside.example.org/fhir/placer"


def patient(
    pid: str, mrn: str, family: str, given: str, birth: str = "1979-03-14"
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": birth,
    }


def practitioner(pid: str, npi: str, family: str, given: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": pid,
        "identifier": [{"system": NPI, "value": npi}],
        "name": [{"family": family, "given": [given]}],
    }


def organization(oid: str, name: str, npi: str | None = None) -> dict[str, Any]:
    org: dict[str, Any] = {"resourceType": "Organization", "id": oid, "active": True, "name": name}
    if npi:
        org["identifier"] = [{"system": NPI, "value": npi}]
    return org


def observation(
    oid: str,
    patient_id: str,
    *,
    code: str = "72514-3",
    value: float | int = 7,
    effective: str = "2026-11-20T10:02:00-05:00",
    part_of: str | None = None,
    based_on: str | None = None,
    status: str = "final",
    category: str = "survey",
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "category": [{"coding": [{"system": OBS_CAT, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code}], "text": "Pain severity 0-10"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective,
        "valueQuantity": {
            "value": value,
            "unit": "{score}",
            "system": "http://unitsofmeasure.org",
            "code": "{score}",
        },
    }
    if part_of:
        obs["partOf"] = [{"reference": part_of}]
    if based_on:
        obs["basedOn"] = [{"reference": based_on}]
    return obs


def procedure(
    pid: str,
    patient_id: str,
    *,
    code: str = "97124",
    start: str = "2026-11-20T10:00:00-05:00",
    end: str = "2026-11-20T10:55:00-05:00",
    based_on: str | None = None,
    identifier: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    proc: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": pid,
        "status": status,
        "code": {"coding": [{"system": CPT, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "performedPeriod": {"start": start, "end": end},
    }
    if based_on:
        proc["basedOn"] = [{"reference": based_on}]
    if identifier:
        proc["identifier"] = [
            {"system": "https://clinic.example.org/fhir/session", "value": identifier}
        ]
    return proc


def service_request(
    sid: str,
    patient_id: str,
    requester_id: str,
    *,
    placer: str = "SR-8891",
    code: str = "97124",
    status: str = "active",
    authored: str = "2026-11-02",
    reason: str = "M54.2",
    requester_npi: str = "1234567893",
) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": sid,
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}
                    ]
                },
                "system": PLACER,
                "value": placer,
            }
        ],
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": CPT, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": authored,
        "requester": {
            "reference": f"Practitioner/{requester_id}",
            "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": requester_npi},
        },
        "reasonCode": [{"coding": [{"system": ICD10, "code": reason}]}],
    }


def task(
    tid: str, focus: str, patient_id: str, owner: str, requester: str, status: str = "requested"
) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": tid,
        "identifier": [{"system": PLACER, "value": f"T-{tid}"}],
        "status": status,
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": focus},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": "2026-11-02T09:00:00-05:00",
        "requester": {"reference": requester},
        "owner": {"reference": owner},
    }


def coverage(cid: str, patient_id: str, payer_id: str, member: str) -> dict[str, Any]:
    return {
        "resourceType": "Coverage",
        "id": cid,
        "identifier": [{"system": "https://payers.example.org/member-id", "value": member}],
        "status": "active",
        "subscriberId": member,
        "beneficiary": {"reference": f"Patient/{patient_id}"},
        "relationship": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                    "code": "self",
                }
            ]
        },
        "payor": [{"reference": f"Organization/{payer_id}"}],
    }


def condition(cid: str, patient_id: str, code: str = "M54.2") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": ICD10, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def store_all(runtime: Runtime, resources: Iterable[dict[str, Any]]) -> list[StoredResource]:
    """Upsert resources by id in one transaction; returns what was stored."""
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        return [store.update(r)[0] for r in resources]
