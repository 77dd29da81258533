"""Bulk Data kick-off parameters, the manifest and payer Groups (pure functions)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from fhir.resources.R4B.group import Group

from fhir_bridge.fhir.bulk_request import (
    PATIENT_TYPES,
    ExportRequest,
    ManifestFile,
    manifest,
    parameters_pairs,
    parse_export,
)
from fhir_bridge.fhir.outcome import FhirError
from fhir_bridge.mapping.payer_group import payer_group


def test_parameters_are_parsed_and_round_trip_through_json():
    req = parse_export(
        "group",
        [
            ("_type", "Patient,Observation"),
            ("_type", "Observation"),
            ("_since", "2026-01-02T03:04:05+01:00"),
            ("_outputFormat", "application/ndjson"),
            ("_typeFilter", "Observation?code=http://loinc.org|72514-3"),
        ],
        group_id="payer-a",
    )
    assert req.types == ("Patient", "Observation")
    assert req.since == datetime(2026, 1, 2, 2, 4, 5)
    assert req.type_filters == {"Observation": ("code=http://loinc.org|72514-3",)}
    assert ExportRequest.from_json(req.to_json()) == req


def test_without_type_a_patient_export_covers_the_compartment_but_not_audit_events():
    req = parse_export("patient", [])
    assert req.export_types() == PATIENT_TYPES
    assert "AuditEvent" not in PATIENT_TYPES
    assert "Organization" not in PATIENT_TYPES


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ([("_type", "Nope")], "_type"),
        ([("_since", "2026-01-01")], "_since"),  # a date, not an instant
        ([("_outputFormat", "application/json")], "_outputFormat"),
        ([("_typeFilter", "Observation")], "_typeFilter"),
        ([("_typeFilter", "Observation?_sort=date")], "_typeFilter"),
        ([("_type", "Patient"), ("_typeFilter", "Observation?status=final")], "_typeFilter"),
        ([("includeAssociatedData", "LatestProvenanceResources")], "includeAssociatedData"),
    ],
)
def test_bad_parameters_name_themselves(params, expression):
    with pytest.raises(FhirError) as caught:
        parse_export("patient", params)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (expression,)


def test_lenient_handling_drops_unsupported_parameters_only():
    assert parse_export("patient", [("_elements", "id")], lenient=True).types is None
    with pytest.raises(FhirError):
        parse_export("patient", [("_type", "Nope")], lenient=True)


def test_post_parameters_and_a_body_that_is_not_parameters():
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_since", "valueInstant": "2026-01-01T00:00:00Z"},
            {"name": "_type", "valueString": "Patient"},
        ],
    }
    assert parameters_pairs(body) == [("_since", "2026-01-01T00:00:00Z"), ("_type", "Patient")]
    with pytest.raises(FhirError):
        parameters_pairs({"resourceType": "Patient"})
    with pytest.raises(FhirError):
        parameters_pairs({"resourceType": "Parameters", "parameter": [{"name": "_type"}]})


def test_the_manifest_lists_outputs_and_errors():
    body = manifest(
        transaction_time=datetime(2026, 12, 6, 4, 0, 0),
        request_url="http://x/fhir/$export",
        files=[
            ManifestFile("output", "Patient", "http://x/f/Patient-1.ndjson", 3),
            ManifestFile("error", "OperationOutcome", "http://x/f/OperationOutcome-1.ndjson", 1),
        ],
    )
    assert body["requiresAccessToken"] is True
    assert body["transactionTime"].startswith("2026-12-06T04:00:00")
    assert body["output"] == [{"type": "Patient", "url": "http://x/f/Patient-1.ndjson", "count": 3}]
    assert body["error"][0]["type"] == "OperationOutcome"


class _Member:
    def __init__(self, pid: str, status: str, period: dict | None) -> None:
        self.patient_id, self.coverage_id, self.status, self.period = (
            pid,
            f"c-{pid}",
            status,
            period,
        )


def test_a_payer_group_marks_members_not_covered_today_inactive():
    today = date(2026, 6, 1)
    group = payer_group(
        "payer-a",
        [
            _Member("p1", "active", {"start": "2026-01-01", "end": "2026-12-31"}),
            _Member("p2", "active", {"start": "2025-01-01", "end": "2025-12-31"}),
            _Member("p3", "cancelled", None),
            _Member("p4", "active", None),
        ],
        today=today,
    )
    assert group["resourceType"] == "Group"
    assert group["id"] == "payer-a"
    assert group["managingEntity"] == {"reference": "Organization/payer-a"}
    inactive = {m["entity"]["reference"]: m["inactive"] for m in group["member"]}
    assert inactive == {
        "Patient/p1": False,
        "Patient/p2": True,
        "Patient/p3": True,
        "Patient/p4": False,
    }
    assert group["member"][0]["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    assert group["quantity"] == 4
    Group.model_validate(group)  # a valid FHIR Group
