"""The search-parameter registry: exactly the supported parameters, with their R4 definitions."""

from __future__ import annotations

import pytest

from fhir_bridge.fhir.search_params import (
    INDEXED_PARAMS,
    SEARCH_PARAMS,
    SEARCHABLE_TYPES,
    params_for,
)

SP = "http://hl7.org/fhir/SearchParameter/"

EXPECTED_NAMES = {
    "Patient": {"identifier", "name", "family", "given", "birthdate", "gender"},
    "Practitioner": {"identifier", "name"},
    "Organization": {"identifier", "name"},
    "ServiceRequest": {
        "patient",
        "subject",
        "status",
        "identifier",
        "requester",
        "authored",
        "code",
        "intent",
        "category",
    },
    "Procedure": {"patient", "subject", "date", "code", "based-on", "identifier", "status"},
    "Observation": {
        "patient",
        "subject",
        "category",
        "code",
        "date",
        "part-of",
        "based-on",
        "status",
        "identifier",
    },
    "Coverage": {"patient", "beneficiary", "payor", "identifier", "status"},
    "Condition": {"patient", "subject", "code", "category", "clinical-status", "identifier"},
    "Task": {
        "owner",
        "requester",
        "focus",
        "status",
        "patient",
        "subject",
        "identifier",
        "code",
        "authored-on",
    },
    "Goal": {"patient", "subject", "lifecycle-status", "identifier"},
    "DocumentReference": {
        "patient",
        "subject",
        "type",
        "category",
        "date",
        "related",
        "identifier",
        "status",
    },
    "PractitionerRole": {"practitioner", "organization", "identifier"},
    "AuditEvent": {"date", "agent", "entity", "outcome", "type", "subtype", "action", "patient"},
}

# (type, name, param type, paths, definition id)
DEFINITIONS = [
    ("Patient", "identifier", "token", ("identifier",), "Patient-identifier"),
    ("Patient", "name", "string", ("name",), "Patient-name"),
    ("Patient", "family", "string", ("name.family",), "individual-family"),
    ("Patient", "given", "string", ("name.given",), "individual-given"),
    ("Patient", "birthdate", "date", ("birthDate",), "individual-birthdate"),
    ("Patient", "gender", "token", ("gender",), "individual-gender"),
    ("Practitioner", "identifier", "token", ("identifier",), "Practitioner-identifier"),
    ("Practitioner", "name", "string", ("name",), "Practitioner-name"),
    ("Organization", "identifier", "token", ("identifier",), "Organization-identifier"),
    ("Organization", "name", "string", ("name", "alias"), "Organization-name"),
    ("ServiceRequest", "patient", "reference", ("subject",), "clinical-patient"),
    ("ServiceRequest", "subject", "reference", ("subject",), "ServiceRequest-subject"),
    ("ServiceRequest", "status", "token", ("status",), "ServiceRequest-status"),
    ("ServiceRequest", "identifier", "token", ("identifier",), "clinical-identifier"),
    ("ServiceRequest", "requester", "reference", ("requester",), "ServiceRequest-requester"),
    ("ServiceRequest", "authored", "date", ("authoredOn",), "ServiceRequest-authored"),
    ("ServiceRequest", "code", "token", ("code",), "clinical-code"),
    ("ServiceRequest", "intent", "token", ("intent",), "ServiceRequest-intent"),
    ("ServiceRequest", "category", "token", ("category",), "ServiceRequest-category"),
    ("Procedure", "patient", "reference", ("subject",), "clinical-patient"),
    ("Procedure", "subject", "reference", ("subject",), "Procedure-subject"),
    ("Procedure", "date", "date", ("performedDateTime", "performedPeriod"), "clinical-date"),
    ("Procedure", "code", "token", ("code",), "clinical-code"),
    ("Procedure", "based-on", "reference", ("basedOn",), "Procedure-based-on"),
    ("Procedure", "identifier", "token", ("identifier",), "clinical-identifier"),
    ("Procedure", "status", "token", ("status",), "Procedure-status"),
    ("Observation", "patient", "reference", ("subject",), "clinical-patient"),
    ("Observation", "subject", "reference", ("subject",), "Observation-subject"),
    ("Observation", "category", "token", ("category",), "Observation-category"),
    ("Observation", "code", "token", ("code",), "clinical-code"),
    (
        "Observation",
        "date",
        "date",
        ("effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant"),
        "clinical-date",
    ),
    ("Observation", "part-of", "reference", ("partOf",), "Observation-part-of"),
    ("Observation", "based-on", "reference", ("basedOn",), "Observation-based-on"),
    ("Observation", "status", "token", ("status",), "Observation-status"),
    ("Observation", "identifier", "token", ("identifier",), "clinical-identifier"),
    ("Coverage", "patient", "reference", ("beneficiary",), "Coverage-patient"),
    ("Coverage", "beneficiary", "reference", ("beneficiary",), "Coverage-beneficiary"),
    ("Coverage", "payor", "reference", ("payor",), "Coverage-payor"),
    ("Coverage", "identifier", "token", ("identifier",), "Coverage-identifier"),
    ("Coverage", "status", "token", ("status",), "Coverage-status"),
    ("Condition", "patient", "reference", ("subject",), "clinical-patient"),
    ("Condition", "subject", "reference", ("subject",), "Condition-subject"),
    ("Condition", "code", "token", ("code",), "clinical-code"),
    ("Condition", "category", "token", ("category",), "Condition-category"),
    ("Condition", "clinical-status", "token", ("clinicalStatus",), "Condition-clinical-status"),
    ("Condition", "identifier", "token", ("identifier",), "clinical-identifier"),
    ("Task", "owner", "reference", ("owner",), "Task-owner"),
    ("Task", "requester", "reference", ("requester",), "Task-requester"),
    ("Task", "focus", "reference", ("focus",), "Task-focus"),
    ("Task", "status", "token", ("status",), "Task-status"),
    ("Task", "patient", "reference", ("for",), "Task-patient"),
    ("Task", "subject", "reference", ("for",), "Task-subject"),
    ("Task", "identifier", "token", ("identifier",), "Task-identifier"),
    ("Task", "code", "token", ("code",), "Task-code"),
    ("Task", "authored-on", "date", ("authoredOn",), "Task-authored-on"),
    ("Goal", "patient", "reference", ("subject",), "clinical-patient"),
    ("Goal", "subject", "reference", ("subject",), "Goal-subject"),
    ("Goal", "lifecycle-status", "token", ("lifecycleStatus",), "Goal-lifecycle-status"),
    ("Goal", "identifier", "token", ("identifier",), "clinical-identifier"),
    (
        "PractitionerRole",
        "practitioner",
        "reference",
        ("practitioner",),
        "PractitionerRole-practitioner",
    ),
    (
        "PractitionerRole",
        "organization",
        "reference",
        ("organization",),
        "PractitionerRole-organization",
    ),
    ("PractitionerRole", "identifier", "token", ("identifier",), "PractitionerRole-identifier"),
    ("AuditEvent", "date", "date", ("recorded",), "AuditEvent-date"),
    ("AuditEvent", "agent", "reference", ("agent.who",), "AuditEvent-agent"),
    ("AuditEvent", "entity", "reference", ("entity.what",), "AuditEvent-entity"),
    ("AuditEvent", "outcome", "token", ("outcome",), "AuditEvent-outcome"),
    ("AuditEvent", "type", "token", ("type",), "AuditEvent-type"),
    ("AuditEvent", "subtype", "token", ("subtype",), "AuditEvent-subtype"),
    ("AuditEvent", "action", "token", ("action",), "AuditEvent-action"),
    ("AuditEvent", "patient", "reference", ("entity.what",), "AuditEvent-patient"),
    ("DocumentReference", "patient", "reference", ("subject",), "clinical-patient"),
    ("DocumentReference", "subject", "reference", ("subject",), "DocumentReference-subject"),
    ("DocumentReference", "type", "token", ("type",), "clinical-type"),
    ("DocumentReference", "category", "token", ("category",), "DocumentReference-category"),
    ("DocumentReference", "date", "date", ("date",), "DocumentReference-date"),
    (
        "DocumentReference",
        "related",
        "reference",
        ("context.related",),
        "DocumentReference-related",
    ),
    ("DocumentReference", "identifier", "token", ("identifier",), "clinical-identifier"),
    ("DocumentReference", "status", "token", ("status",), "DocumentReference-status"),
]


def test_registry_lists_exactly_the_supported_parameters():
    assert {rt: set(params) for rt, params in SEARCH_PARAMS.items()} == EXPECTED_NAMES
    assert set(SEARCHABLE_TYPES) == set(EXPECTED_NAMES)


def test_internal_parameters_are_indexed_but_never_offered():
    assert "~period" in INDEXED_PARAMS["Coverage"]
    assert not any(name.startswith("~") for p in SEARCH_PARAMS.values() for name in p)


def test_definition_table_covers_every_parameter():
    assert {(rt, name) for rt, name, *_ in DEFINITIONS} == {
        (rt, name) for rt, names in EXPECTED_NAMES.items() for name in names
    }


@pytest.mark.parametrize(("resource_type", "name", "ptype", "paths", "definition"), DEFINITIONS)
def test_each_parameter_has_its_r4_type_paths_and_definition(
    resource_type, name, ptype, paths, definition
):
    param = params_for(resource_type)[name]
    assert (param.resource_type, param.name, param.type, param.paths) == (
        resource_type,
        name,
        ptype,
        paths,
    )
    assert param.definition == SP + definition
    assert param.description


@pytest.mark.parametrize(
    ("resource_type", "name", "targets"),
    [
        ("ServiceRequest", "subject", {"Group", "Device", "Patient", "Location"}),
        ("Procedure", "subject", {"Group", "Patient"}),
        ("Procedure", "based-on", {"CarePlan", "ServiceRequest"}),
        ("Observation", "based-on", {"ServiceRequest", "CarePlan"}),
        ("Observation", "part-of", {"Procedure", "ImagingStudy"}),
        ("Coverage", "payor", {"Organization", "Patient", "RelatedPerson"}),
        ("Coverage", "beneficiary", {"Patient"}),
        ("Task", "owner", {"Practitioner", "Organization", "PractitionerRole"}),
        ("Goal", "subject", {"Group", "Organization", "Patient"}),
        ("PractitionerRole", "practitioner", {"Practitioner"}),
        ("PractitionerRole", "organization", {"Organization"}),
    ],
)
def test_reference_parameters_name_their_r4_target_types(resource_type, name, targets):
    assert targets <= set(params_for(resource_type)[name].targets)


@pytest.mark.parametrize(("resource_type", "name"), [("Task", "focus"), ("Task", "subject")])
def test_any_type_references_have_no_target_list(resource_type, name):
    assert params_for(resource_type)[name].targets == ()


@pytest.mark.parametrize(
    "resource_type",
    ["ServiceRequest", "Procedure", "Observation", "Condition", "Task", "Goal", "AuditEvent"],
)
def test_patient_parameters_only_match_patient_references(resource_type):
    param = params_for(resource_type)["patient"]
    assert param.targets == ("Patient",)
    assert param.where_type == "Patient"


def test_non_reference_parameters_have_no_targets():
    for params in SEARCH_PARAMS.values():
        for param in params.values():
            assert param.type in {"token", "reference", "date", "string"}
            if param.type != "reference":
                assert param.targets == ()
                assert param.where_type is None


def test_special_parameters_are_not_in_the_registry():
    for params in SEARCH_PARAMS.values():
        assert "_id" not in params
        assert "_lastUpdated" not in params


def test_unknown_resource_type_is_a_key_error():
    with pytest.raises(KeyError):
        params_for("Encounter")
