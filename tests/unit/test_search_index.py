"""What a stored resource version contributes to the search index."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhir_bridge.fhir.dates import MAX_DT, MIN_DT
from fhir_bridge.fhir.search_index import (
    DateEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    extract_index,
    normalize_string,
    parse_reference,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
MRN = "https://clinic.example.org/fhir/mrn"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"

OBSERVATION = {
    "resourceType": "Observation",
    "id": "pain-1",
    "identifier": [{"system": "https://clinic.example.org/obs", "value": "OBS-77"}],
    "basedOn": [{"reference": "ServiceRequest/ref-1"}],
    "partOf": [{"reference": "https://clinic.example.org/fhir/Procedure/massage-1/_history/2"}],
    "status": "final",
    "category": [{"coding": [{"system": OBS_CAT, "code": "survey", "display": "Survey"}]}],
    "code": {
        "coding": [{"system": LOINC, "code": "72514-3", "display": "Pain severity - 0-10 verbal"}],
        "text": "Pain score",
    },
    "subject": {"reference": "Patient/p1", "display": "Ana Rivera"},
    "effectiveDateTime": "2026-11-20T22:30:00-05:00",
    "valueInteger": 7,
}

PROCEDURE = {
    "resourceType": "Procedure",
    "id": "massage-1",
    "identifier": [{"system": "https://clinic.example.org/session", "value": "S-1001"}],
    "basedOn": [{"reference": "ServiceRequest/ref-1"}, {"reference": "CarePlan/cp-1"}],
    "status": "completed",
    "code": {"coding": [{"system": CPT, "code": "97124", "display": "Massage therapy"}]},
    "subject": {"reference": "Patient/p1"},
    "performedPeriod": {"start": "2026-11-20T10:00:00-05:00", "end": "2026-11-20T10:50:00-05:00"},
}

TASK = {
    "resourceType": "Task",
    "id": "t1",
    "identifier": [{"system": "https://payer.example.org/task", "value": "T-9"}],
    "status": "requested",
    "intent": "order",
    "code": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/CodeSystem/task-code",
                "code": "fulfill",
                "display": "Fulfill the focal request",
            }
        ]
    },
    "focus": {"reference": "ServiceRequest/ref-1"},
    "for": {"reference": "Patient/p1"},
    "authoredOn": "2026-11-19T08:15:00Z",
    "requester": {"reference": "PractitionerRole/pr-1"},
    "owner": {"reference": "https://clinic.example.org/fhir/Organization/clinic"},
}

COVERAGE = {
    "resourceType": "Coverage",
    "id": "cov-1",
    "identifier": [{"system": "https://payer.example.org/member", "value": "M-123"}],
    "status": "active",
    "beneficiary": {"reference": "Patient/p1"},
    "payor": [
        {"reference": "http://example.org/fhir/Organization/example-payer", "display": "Payer XYZ"}
    ],
    "period": {"start": "2026-01-01", "end": "2026-12-31"},
}

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [
        {
            "type": {"coding": [{"code": "MR"}], "text": "Medical Record Number"},
            "system": MRN,
            "value": "P-1",
        }
    ],
    "name": [
        {
            "use": "official",
            "family": "Núñez  García",
            "given": ["Ana", "María"],
            "prefix": ["Dr."],
            "suffix": ["PhD"],
        },
        {"use": "nickname", "text": "Annie"},
    ],
    "birthDate": "1979-03-14",
}


def _tokens(entries, param):
    return {(t.system, t.code) for t in entries.tokens if t.param == param}


def _refs(entries, param):
    return {
        (r.target_type, r.target_id, r.reference) for r in entries.references if r.param == param
    }


def _dates(entries, param):
    return {(d.low, d.high) for d in entries.dates if d.param == param}


def _strings(entries, param):
    return {(s.normalized, s.exact) for s in entries.strings if s.param == param}


# --- Observation ---------------------------------------------------------------------------------


def test_observation_tokens_for_code_category_status_identifier():
    entries = extract_index(OBSERVATION)
    assert _tokens(entries, "code") >= {(LOINC, "72514-3")}
    assert _tokens(entries, "category") == {(OBS_CAT, "survey")}
    assert _tokens(entries, "status") == {(None, "final")}
    assert _tokens(entries, "identifier") == {("https://clinic.example.org/obs", "OBS-77")}


def test_coding_display_and_concept_text_are_both_searchable_as_text():
    entries = extract_index(OBSERVATION)
    code_entries = [t for t in entries.tokens if t.param == "code"]
    assert TokenEntry("code", LOINC, "72514-3", "pain severity - 0-10 verbal") in code_entries
    assert TokenEntry("code", None, None, "pain score") in code_entries


def test_concept_text_is_the_coding_text_when_the_coding_has_no_display():
    obs = {**OBSERVATION, "code": {"coding": [{"system": LOINC, "code": "1-1"}], "text": "Pain"}}
    assert [t for t in extract_index(obs).tokens if t.param == "code"] == [
        TokenEntry("code", LOINC, "1-1", "pain")
    ]


def test_observation_references_patient_subject_based_on_part_of():
    entries = extract_index(OBSERVATION)
    assert _refs(entries, "patient") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "subject") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "based-on") == {("ServiceRequest", "ref-1", "ServiceRequest/ref-1")}
    # an absolute versioned reference: type and id without the version, raw string kept
    assert _refs(entries, "part-of") == {
        (
            "Procedure",
            "massage-1",
            "https://clinic.example.org/fhir/Procedure/massage-1/_history/2",
        )
    }


def test_observation_date_offset_crossing_midnight_is_indexed_in_utc():
    assert _dates(extract_index(OBSERVATION), "date") == {
        (datetime(2026, 11, 21, 3, 30), datetime(2026, 11, 21, 3, 30, 1))
    }


@pytest.mark.parametrize(
    ("element", "value", "expected"),
    [
        (
            "effectiveInstant",
            "2026-11-20T10:00:00.5Z",
            (datetime(2026, 11, 20, 10, 0, 0, 500000), datetime(2026, 11, 20, 10, 0, 0, 600000)),
        ),
        (
            "effectivePeriod",
            {"start": "2026-11-20", "end": "2026-11-22"},
            (datetime(2026, 11, 20), datetime(2026, 11, 23)),
        ),
        ("effectivePeriod", {"start": "2026-11-20"}, (datetime(2026, 11, 20), MAX_DT)),
        ("effectivePeriod", {"end": "2026-11-22"}, (MIN_DT, datetime(2026, 11, 23))),
        (
            "effectiveTiming",
            {"event": ["2026-11-20", "2026-11-25T10:00:00Z"]},
            (datetime(2026, 11, 20), datetime(2026, 11, 25, 10, 0, 1)),
        ),
        (
            "effectiveTiming",
            {"repeat": {"boundsPeriod": {"start": "2026-11", "end": "2026-12"}}},
            (datetime(2026, 11, 1), datetime(2027, 1, 1)),
        ),
    ],
)
def test_observation_effective_choice_types(element, value, expected):
    obs = {k: v for k, v in OBSERVATION.items() if k != "effectiveDateTime"}
    obs[element] = value
    assert _dates(extract_index(obs), "date") == {expected}


def test_group_subject_is_a_subject_but_not_a_patient():
    obs = {**OBSERVATION, "subject": {"reference": "Group/g1"}}
    entries = extract_index(obs)
    assert _refs(entries, "patient") == set()
    assert _refs(entries, "subject") == {("Group", "g1", "Group/g1")}


def test_absolute_patient_url_counts_for_patient():
    obs = {**OBSERVATION, "subject": {"reference": "https://ehr.example.org/fhir/Patient/123"}}
    assert _refs(extract_index(obs), "patient") == {
        ("Patient", "123", "https://ehr.example.org/fhir/Patient/123")
    }


@pytest.mark.parametrize(
    "reference", ["#contained-1", "urn:uuid:0f8c2f1e-8a52-4bd1-9d3c-1a2b3c4d5e6f"]
)
def test_contained_and_urn_references_are_kept_raw_without_type_or_id(reference):
    obs = {**OBSERVATION, "subject": {"reference": reference}}
    entries = extract_index(obs)
    assert _refs(entries, "subject") == {(None, None, reference)}
    assert _refs(entries, "patient") == set()


def test_identifier_only_reference_goes_to_the_token_index_under_the_same_param():
    obs = {
        **OBSERVATION,
        "subject": {"type": "Patient", "identifier": {"system": MRN, "value": "P-1"}},
    }
    entries = extract_index(obs)
    assert _refs(entries, "subject") == set()
    assert _tokens(entries, "subject") == {(MRN, "P-1")}
    assert _tokens(entries, "patient") == {(MRN, "P-1")}


def test_identifier_reference_without_patient_type_is_not_a_patient():
    obs = {**OBSERVATION, "subject": {"identifier": {"system": MRN, "value": "P-1"}}}
    entries = extract_index(obs)
    assert _tokens(entries, "subject") == {(MRN, "P-1")}
    assert _tokens(entries, "patient") == set()


# --- Procedure, Task, Coverage, Patient ---------------------------------------------------------


def test_procedure_entries():
    entries = extract_index(PROCEDURE)
    assert _tokens(entries, "code") == {(CPT, "97124")}
    assert _tokens(entries, "status") == {(None, "completed")}
    assert _tokens(entries, "identifier") == {("https://clinic.example.org/session", "S-1001")}
    assert _refs(entries, "patient") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "based-on") == {
        ("ServiceRequest", "ref-1", "ServiceRequest/ref-1"),
        ("CarePlan", "cp-1", "CarePlan/cp-1"),
    }
    # 10:00-10:50 New York, second precision: the end second is included
    assert _dates(entries, "date") == {
        (datetime(2026, 11, 20, 15, 0), datetime(2026, 11, 20, 15, 50, 1))
    }


def test_procedure_performed_date_time():
    proc = {k: v for k, v in PROCEDURE.items() if k != "performedPeriod"}
    proc["performedDateTime"] = "2026-11-20"
    assert _dates(extract_index(proc), "date") == {(datetime(2026, 11, 20), datetime(2026, 11, 21))}


def test_task_entries():
    entries = extract_index(TASK)
    assert _tokens(entries, "status") == {(None, "requested")}
    assert _tokens(entries, "code") == {("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")}
    assert _tokens(entries, "identifier") == {("https://payer.example.org/task", "T-9")}
    assert _refs(entries, "focus") == {("ServiceRequest", "ref-1", "ServiceRequest/ref-1")}
    assert _refs(entries, "patient") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "subject") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "requester") == {("PractitionerRole", "pr-1", "PractitionerRole/pr-1")}
    assert _refs(entries, "owner") == {
        ("Organization", "clinic", "https://clinic.example.org/fhir/Organization/clinic")
    }
    assert _dates(entries, "authored-on") == {
        (datetime(2026, 11, 19, 8, 15), datetime(2026, 11, 19, 8, 15, 1))
    }


def test_task_for_a_non_patient_is_a_subject_only():
    entries = extract_index({**TASK, "for": {"reference": "Device/d1"}})
    assert _refs(entries, "patient") == set()
    assert _refs(entries, "subject") == {("Device", "d1", "Device/d1")}


def test_coverage_entries():
    entries = extract_index(COVERAGE)
    assert _tokens(entries, "status") == {(None, "active")}
    assert _tokens(entries, "identifier") == {("https://payer.example.org/member", "M-123")}
    assert _refs(entries, "patient") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "beneficiary") == {("Patient", "p1", "Patient/p1")}
    assert _refs(entries, "payor") == {
        ("Organization", "example-payer", "http://example.org/fhir/Organization/example-payer")
    }
    # Coverage.period is not an R4 search parameter: indexed only for member scoping
    assert [(d.param, d.low, d.high) for d in entries.dates] == [
        ("~period", datetime(2026, 1, 1), datetime(2027, 1, 1))
    ]


def test_patient_identifier_text_comes_from_identifier_type_text():
    entries = extract_index(PATIENT)
    assert [t for t in entries.tokens if t.param == "identifier"] == [
        TokenEntry("identifier", MRN, "P-1", "medical record number")
    ]


def test_patient_name_indexes_every_part_and_family_given_their_own():
    entries = extract_index(PATIENT)
    assert _strings(entries, "name") == {
        ("nunez garcia", "Núñez  García"),
        ("ana", "Ana"),
        ("maria", "María"),
        ("dr.", "Dr."),
        ("phd", "PhD"),
        ("annie", "Annie"),
    }
    assert _strings(entries, "family") == {("nunez garcia", "Núñez  García")}
    assert _strings(entries, "given") == {("ana", "Ana"), ("maria", "María")}
    assert _dates(entries, "birthdate") == {(datetime(1979, 3, 14), datetime(1979, 3, 15))}


def test_organization_name_and_alias_are_both_names():
    org = {
        "resourceType": "Organization",
        "name": "Northside Clinic",
        "alias": ["NSC", "Northside"],
    }
    assert {s.exact for s in extract_index(org).strings} == {"Northside Clinic", "NSC", "Northside"}


def test_practitioner_role_references():
    role = {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": "Practitioner/pr1"},
        "organization": {"reference": "Organization/o1"},
    }
    entries = extract_index(role)
    assert _refs(entries, "practitioner") == {("Practitioner", "pr1", "Practitioner/pr1")}
    assert _refs(entries, "organization") == {("Organization", "o1", "Organization/o1")}


def test_condition_and_goal_status_tokens():
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": "279039007", "display": "Low back pain"}]},
        "subject": {"reference": "Patient/p1"},
    }
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "subject": {"reference": "Patient/p1"},
    }
    assert _tokens(extract_index(condition), "clinical-status") == {
        ("http://terminology.hl7.org/CodeSystem/condition-clinical", "active")
    }
    assert _tokens(extract_index(goal), "lifecycle-status") == {(None, "active")}
    assert _refs(extract_index(goal), "patient") == {("Patient", "p1", "Patient/p1")}


def test_service_request_entries():
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "386053000"}]}],
        "code": {"coding": [{"system": CPT, "code": "97124"}]},
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "Practitioner/dr-1"},
        "authoredOn": "2026-11-18",
    }
    entries = extract_index(request)
    assert _tokens(entries, "intent") == {(None, "order")}
    assert _tokens(entries, "category") == {(SNOMED, "386053000")}
    assert _refs(entries, "requester") == {("Practitioner", "dr-1", "Practitioner/dr-1")}
    assert _dates(entries, "authored") == {(datetime(2026, 11, 18), datetime(2026, 11, 19))}


# --- robustness ----------------------------------------------------------------------------------


def test_duplicate_values_are_indexed_once():
    obs = {
        **OBSERVATION,
        "category": [
            {"coding": [{"system": OBS_CAT, "code": "survey"}]},
            {"coding": [{"system": OBS_CAT, "code": "survey"}]},
        ],
    }
    assert [t for t in extract_index(obs).tokens if t.param == "category"] == [
        TokenEntry("category", OBS_CAT, "survey", None)
    ]


def test_unparseable_values_are_skipped_not_raised():
    obs = {
        **OBSERVATION,
        "effectiveDateTime": "not-a-date",
        "subject": {"reference": 42},
        "category": ["weird", 3, None],
        "code": {"coding": "not-a-list-of-dicts"},
    }
    entries = extract_index(obs)
    assert _dates(entries, "date") == set()
    assert _refs(entries, "subject") == set()
    assert _tokens(entries, "category") == {(None, "weird")}


def test_unsupported_resource_type_has_no_entries():
    entries = extract_index({"resourceType": "Encounter", "status": "finished"})
    assert entries.tokens == entries.references == entries.dates == entries.strings == ()


def test_entry_types_are_frozen_values():
    entry = DateEntry("date", datetime(2026, 1, 1), datetime(2026, 1, 2))
    assert entry == DateEntry("date", datetime(2026, 1, 1), datetime(2026, 1, 2))
    assert hash(ReferenceEntry("subject", None, None, "#c1")) == hash(
        ReferenceEntry("subject", None, None, "#c1")
    )
    assert StringEntry("name", "ana", "Ana") != StringEntry("name", "ana", "ANA")


# --- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("Ana", "ana"),
        ("  Núñez\tGARCÍA \n", "nunez garcia"),
        ("Straße", "strasse"),
        ("Zoë", "zoe"),
        ("O'Brien", "o'brien"),
    ],
)
def test_normalize_string_folds_case_accents_and_whitespace(value, normalized):
    assert normalize_string(value) == normalized


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        ("Patient/123", ("Patient", "123")),
        ("Patient/123/_history/4", ("Patient", "123")),
        ("https://ehr.example.org/fhir/R4/Patient/a.b-1", ("Patient", "a.b-1")),
        ("http://x/fhir/Patient/1/_history/2", ("Patient", "1")),
        ("#c1", (None, None)),
        ("urn:uuid:1234", (None, None)),
        ("urn:oid:1.2.3", (None, None)),
        ("Patient?identifier=x", (None, None)),
        ("foo/Patient/1", (None, None)),
        ("patient/1", (None, None)),
    ],
)
def test_parse_reference(reference, parsed):
    assert parse_reference(reference) == parsed
