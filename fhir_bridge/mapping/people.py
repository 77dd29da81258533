"""Patient, Practitioner, payer Organization and Coverage from a session record (pure)."""

from __future__ import annotations

from typing import Any

from fhir_bridge.mapping.context import SessionContext
from fhir_bridge.records.model import SessionRecord

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
DATA_ABSENT = {
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
            "valueCode": "unknown",
        }
    ]
}


#: Marks resources the bridge had to create from thin data (staff should complete them).
PLACEHOLDER_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "UNCERTAIN",
    "display": "uncertain",
}


def is_placeholder(resource: dict[str, Any] | None) -> bool:
    """True for a resource the bridge created as a placeholder (or when there is none)."""
    if resource is None:
        return True
    tags = (resource.get("meta") or {}).get("tag", [])
    return any(
        t.get("system") == PLACEHOLDER_TAG["system"] and t.get("code") == PLACEHOLDER_TAG["code"]
        for t in tags
    )


def _type(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": V2_0203, "code": code, "display": display}]}


def patient(record: SessionRecord, ctx: SessionContext) -> dict[str, Any]:
    """The US Core Patient: the existing one updated with what the record says, or a new one."""
    info = record.patient
    body: dict[str, Any] = dict(ctx.existing_patient or {})
    body.update(resourceType="Patient", id=ctx.patient_id)
    body.setdefault("meta", {"profile": [f"{US_CORE}/us-core-patient"]})
    mrn = {
        "use": "usual",
        "type": _type("MR", "Medical record number"),
        "system": ctx.clinic.mrn_system,
        "value": info.mrn,
    }
    identifiers = [
        i for i in body.get("identifier", []) if i.get("system") != ctx.clinic.mrn_system
    ]
    body["identifier"] = [mrn, *identifiers]
    if info.family_name or info.given_names:
        name: dict[str, Any] = {"use": "official"}
        if info.family_name:
            name["family"] = info.family_name
        if info.given_names:
            name["given"] = list(info.given_names)
        body["name"] = [name, *[n for n in body.get("name", []) if n.get("use") != "official"]]
    elif not body.get("name"):
        body["name"] = [DATA_ABSENT]
    if info.sex:
        body["gender"] = info.sex
    if info.birth_date:
        body["birthDate"] = info.birth_date.isoformat()
    return body


def _split_name(text: str) -> dict[str, Any]:
    """'Sam Lee, LMT' -> family Lee, given [Sam], suffix [LMT], text kept."""
    person, _, suffix = text.partition(",")
    parts = person.split()
    name: dict[str, Any] = {"text": text.strip()}
    if parts:
        name["family"] = parts[-1]
    if len(parts) > 1:
        name["given"] = parts[:-1]
    if suffix.strip():
        name["suffix"] = [suffix.strip()]
    return name


def practitioner(record: SessionRecord, ctx: SessionContext) -> dict[str, Any] | None:
    """A US Core Practitioner for the therapist, or None when one is already on file."""
    if ctx.existing_practitioner is not None:
        return None
    therapist = record.therapist
    return {
        "resourceType": "Practitioner",
        "id": ctx.practitioner_id,
        "meta": {"profile": [f"{US_CORE}/us-core-practitioner"]},
        "identifier": [{"use": "official", "system": NPI_SYSTEM, "value": therapist.npi}],
        "name": [_split_name(therapist.name)] if therapist.name else [DATA_ABSENT],
    }


def payer_organization(record: SessionRecord, ctx: SessionContext) -> dict[str, Any] | None:
    """A minimal payer Organization for an unknown payer id (flagged for staff), else None."""
    coverage = record.patient.coverage
    if (
        coverage is None
        or ctx.existing_payer_organization is not None
        or ctx.payer_organization_id is None
    ):
        return None
    return {
        "resourceType": "Organization",
        "id": ctx.payer_organization_id,
        "meta": {"profile": [f"{US_CORE}/us-core-organization"], "tag": [PLACEHOLDER_TAG]},
        "identifier": [{"system": ctx.clinic.payer_id_system, "value": coverage.payer_id}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "pay",
                        "display": "Payer",
                    }
                ]
            }
        ],
        "name": coverage.payer_id,
    }


def coverage(record: SessionRecord, ctx: SessionContext) -> dict[str, Any] | None:
    """A US Core Coverage when the record names one that is not on file yet, else None."""
    info = record.patient.coverage
    if info is None or ctx.existing_coverage is not None or ctx.coverage_id is None:
        return None
    return {
        "resourceType": "Coverage",
        "id": ctx.coverage_id,
        "meta": {"profile": [f"{US_CORE}/us-core-coverage"]},
        "identifier": [
            {
                "type": _type("MB", "Member Number"),
                "system": ctx.clinic.member_id_system(info.payer_id),
                "value": info.member_id,
            }
        ],
        "status": "active",
        "subscriberId": info.member_id,
        "beneficiary": {"reference": f"Patient/{ctx.patient_id}"},
        # the clinic record does not say whose policy it is
        "relationship": DATA_ABSENT,
        "payor": [{"reference": f"Organization/{ctx.payer_organization_id}"}],
    }
