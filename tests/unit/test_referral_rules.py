"""check_referral: which inbound prescriptions (ServiceRequest) are usable; what staff is told."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from fhir_bridge.fhir.outcome import Issue
from fhir_bridge.mapping.referral_rules import (
    ReferralFacts,
    check_referral,
    placer_identifier,
)
from fhir_bridge.mapping.tables import Code, load_tables

TODAY = date(2026, 3, 2)
CPT = "http://www.ama-assn.org/go/cpt"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
NPI = "http://hl7.org/fhir/sid/us-npi"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
GOOD_NPI, OTHER_GOOD_NPI, BAD_NPI = "1234567893", "1245319599", "9941339108"
PLACER = {
    "type": {"coding": [{"system": V2, "code": "PLAC"}]},
    "system": "https://ehr.example-ortho.org/orders",
    "value": "RX-2026-0042",
}


def referral() -> dict[str, Any]:
    """A realistic US-Core-ish prescription: whiplash, Swedish massage 2/week, 8 visits."""
    return {
        "resourceType": "ServiceRequest",
        "id": "rx-42",
        "identifier": [copy.deepcopy(PLACER)],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "386053000"}]}],
        "code": {
            "coding": [{"system": CPT, "code": "97124", "display": "Massage therapy"}],
            "text": "Therapeutic massage, cervical and upper back",
        },
        "subject": {"reference": "Patient/pat-7"},
        "requester": {
            "reference": "Practitioner/dr-lee",
            "identifier": {"system": NPI, "value": GOOD_NPI},
            "display": "Dr. Dana Lee",
        },
        "reasonCode": [
            {
                "coding": [
                    {
                        "system": ICD,
                        "code": "S13.4XXA",
                        "display": "Sprain of ligaments of cervical spine, initial encounter",
                    }
                ],
                "text": "Whiplash after motor vehicle collision",
            }
        ],
        "authoredOn": "2026-02-20",
        "occurrenceTiming": {
            "repeat": {
                "count": 8,
                "frequency": 2,
                "period": 1,
                "periodUnit": "wk",
                "boundsPeriod": {"start": "2026-02-23", "end": "2026-05-31"},
            }
        },
        "insurance": [{"reference": "Coverage/cov-7"}],
        "note": [{"text": "No deep pressure on the anterior neck."}],
    }


@pytest.fixture(scope="module")
def services() -> tuple[Code, ...]:
    return load_tables().referral_services


def check(sr: Any, services: tuple[Code, ...], **facts: Any) -> list[Issue]:
    return check_referral(sr, ReferralFacts(today=TODAY, **facts), services)


def found(issues: list[Issue]) -> list[tuple[str, str, tuple[str, ...]]]:
    """What a user sees first: severity, code and where."""
    return [(i.severity, i.code, i.expression) for i in issues]


def only(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, found(issues)
    return issues[0]


# --- the realistic referral ----------------------------------------------------------------


def test_realistic_referral_has_no_issue(services: tuple[Code, ...]) -> None:
    assert check(referral(), services) == []


def test_placer_identifier_is_the_plac_one() -> None:
    sr = referral()
    fill = {"type": {"coding": [{"system": V2, "code": "FILL"}]}, "system": "urn:x", "value": "1"}
    sr["identifier"].insert(0, fill)
    assert placer_identifier(sr) == PLACER


@pytest.mark.parametrize("sr", [None, [], {}, {"identifier": "RX-1"}, {"identifier": [5, None]}])
def test_placer_identifier_absent(sr: Any) -> None:
    assert placer_identifier(sr) is None


# --- intent and status ---------------------------------------------------------------------


@pytest.mark.parametrize("intent", ["order", "original-order", "filler-order"])
def test_order_intents_are_accepted(services: tuple[Code, ...], intent: str) -> None:
    sr = referral()
    sr["intent"] = intent
    assert check(sr, services) == []


@pytest.mark.parametrize("intent", ["proposal", "plan", "reflex-order", "ORDER"])
def test_other_intents_are_refused(services: tuple[Code, ...], intent: str) -> None:
    sr = referral()
    sr["intent"] = intent
    issue = only(check(sr, services))
    assert found([issue]) == [("error", "value", ("ServiceRequest.intent",))]
    assert "order, original-order, filler-order" in issue.diagnostics


def test_missing_intent_is_required(services: tuple[Code, ...]) -> None:
    sr = referral()
    del sr["intent"]
    assert found(check(sr, services)) == [("error", "required", ("ServiceRequest.intent",))]


@pytest.mark.parametrize("status", ["draft", "on-hold", "revoked", "completed"])
def test_only_active_is_accepted(services: tuple[Code, ...], status: str) -> None:
    sr = referral()
    sr["status"] = status
    issue = only(check(sr, services))
    assert found([issue]) == [("error", "value", ("ServiceRequest.status",))]
    assert status in issue.diagnostics


# --- subject -------------------------------------------------------------------------------

CONTAINED_PATIENT = {
    "resourceType": "Patient",
    "id": "pat",
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "birthDate": "1980-04-12",
}


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/pat-7"},
        {"reference": "https://ehr.example-ortho.org/fhir/Patient/pat-7"},
        {"reference": "https://ehr.example-ortho.org/fhir/Patient/pat-7/_history/3"},
        {"reference": "#pat"},
        {"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-1"}},
        {"type": "Patient", "identifier": {"system": "urn:oid:2.16.1", "value": "MRN-1"}},
        {"type": "Patient", "reference": "urn:uuid:0c3f5c9e-9a48-4f0e-8f3a-2f0d7f4e3a11"},
    ],
)
def test_patient_subjects_are_accepted(services: tuple[Code, ...], subject: Any) -> None:
    sr = referral()
    sr["contained"] = [CONTAINED_PATIENT]
    sr["subject"] = subject
    assert check(sr, services) == []


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ({"reference": "Group/g1"}, "value"),
        ({"type": "Group", "identifier": {"system": "urn:x", "value": "1"}}, "value"),
        ({"reference": "#org"}, "value"),  # a contained Organization
        ({"reference": "#nobody"}, "value"),
        ({"reference": "urn:uuid:0c3f5c9e-9a48-4f0e-8f3a-2f0d7f4e3a11"}, "value"),  # no type
        ({"display": "Jane Doe"}, "value"),
        ("Patient/pat-7", "structure"),
        (None, "required"),
    ],
)
def test_non_patient_subjects_are_refused(
    services: tuple[Code, ...], subject: Any, code: str
) -> None:
    sr = referral()
    sr["contained"] = [{"resourceType": "Organization", "id": "org", "name": "Acme"}]
    sr["subject"] = subject
    issue = only(check(sr, services))
    assert found([issue]) == [("error", code, ("ServiceRequest.subject",))]
    assert "Jane" not in issue.diagnostics


# --- requester and NPI ---------------------------------------------------------------------


def _npi(value: Any) -> dict[str, Any]:
    return {"system": NPI, "value": value}


def test_missing_requester_is_required(services: tuple[Code, ...]) -> None:
    sr = referral()
    del sr["requester"]
    assert found(check(sr, services)) == [("error", "required", ("ServiceRequest.requester",))]


@pytest.mark.parametrize(
    ("requester", "facts"),
    [
        ({"reference": "Organization/clinic", "identifier": _npi(GOOD_NPI)}, {}),
        ({"type": "Organization", "identifier": _npi(GOOD_NPI)}, {}),
        ({"reference": "Patient/pat-7"}, {}),
        (
            {"identifier": _npi(GOOD_NPI)},
            {"requester": {"resourceType": "Organization", "identifier": [_npi(GOOD_NPI)]}},
        ),
    ],
)
def test_organization_or_patient_requester_is_refused(
    services: tuple[Code, ...], requester: dict[str, Any], facts: dict[str, Any]
) -> None:
    sr = referral()
    sr["requester"] = requester
    issue = only(check(sr, services, **facts))
    assert found([issue]) == [("error", "value", ("ServiceRequest.requester",))]
    assert "Practitioner or PractitionerRole" in issue.diagnostics


@pytest.mark.parametrize("npi", [GOOD_NPI, OTHER_GOOD_NPI])
def test_identifier_only_requester_with_valid_npi(services: tuple[Code, ...], npi: str) -> None:
    sr = referral()
    sr["requester"] = {"identifier": _npi(npi)}
    assert check(sr, services) == []


@pytest.mark.parametrize("npi", [BAD_NPI, "123456789", 1234567893])
def test_invalid_npi_on_the_reference_is_named_where_it_is(
    services: tuple[Code, ...], npi: Any
) -> None:
    sr = referral()
    sr["requester"]["identifier"] = _npi(npi)
    issue = only(check(sr, services))
    assert found([issue]) == [("error", "value", ("ServiceRequest.requester.identifier.value",))]
    assert str(npi) in issue.diagnostics


def test_requester_without_any_npi_is_required(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["requester"] = {"reference": "Practitioner/dr-lee"}
    facts = {"requester": {"resourceType": "Practitioner", "identifier": [{"value": "x"}]}}
    issue = only(check(sr, services, **facts))
    assert found([issue]) == [("error", "required", ("ServiceRequest.requester",))]
    assert NPI in issue.diagnostics


def test_npi_of_the_resolved_practitioner(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["requester"] = {"reference": "Practitioner/dr-lee"}
    on_file = {"resourceType": "Practitioner", "identifier": [_npi(OTHER_GOOD_NPI)]}
    assert check(sr, services, requester=on_file) == []
    on_file["identifier"] = [_npi(BAD_NPI)]
    issue = only(check(sr, services, requester=on_file))
    assert found([issue]) == [("error", "value", ("ServiceRequest.requester",))]
    assert BAD_NPI in issue.diagnostics


def test_npi_of_a_contained_practitioner_points_into_contained(
    services: tuple[Code, ...],
) -> None:
    sr = referral()
    doctor = {
        "resourceType": "Practitioner",
        "id": "doc",
        "identifier": [{"system": "urn:x", "value": "7"}, _npi(BAD_NPI)],
    }
    sr["contained"] = [doctor]
    sr["requester"] = {"reference": "#doc"}
    issue = only(check(sr, services))
    assert found([issue]) == [
        ("error", "value", ("ServiceRequest.contained[0].identifier[1].value",))
    ]


def test_contained_role_and_its_contained_practitioner(services: tuple[Code, ...]) -> None:
    sr = referral()
    role = {"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "#doc"}}
    doctor = {"resourceType": "Practitioner", "id": "doc", "identifier": [_npi(GOOD_NPI)]}
    sr["contained"] = [role, doctor]
    sr["requester"] = {"reference": "#role"}
    assert check(sr, services) == []
    doctor["identifier"] = [_npi(BAD_NPI)]
    assert found(check(sr, services)) == [
        ("error", "value", ("ServiceRequest.contained[1].identifier[0].value",))
    ]
    role["practitioner"] = {"identifier": _npi(BAD_NPI)}
    assert found(check(sr, services)) == [
        ("error", "value", ("ServiceRequest.contained[0].practitioner.identifier.value",))
    ]


def test_role_on_file_uses_its_practitioner(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["requester"] = {"reference": "PractitionerRole/ortho-lee"}
    role = {"resourceType": "PractitionerRole", "practitioner": {"reference": "Practitioner/x"}}
    doctor = {"resourceType": "Practitioner", "identifier": [_npi(OTHER_GOOD_NPI)]}
    assert check(sr, services, requester=role, requester_practitioner=doctor) == []
    assert found(check(sr, services, requester=role)) == [
        ("error", "required", ("ServiceRequest.requester",))
    ]
    doctor["identifier"] = [_npi(BAD_NPI)]
    assert found(check(sr, services, requester=role, requester_practitioner=doctor)) == [
        ("error", "value", ("ServiceRequest.requester",))
    ]


def test_the_nearest_npi_decides(services: tuple[Code, ...]) -> None:
    """A valid NPI on the reference is not overruled by an old one on file."""
    sr = referral()
    on_file = {"resourceType": "Practitioner", "identifier": [_npi(BAD_NPI)]}
    assert check(sr, services, requester=on_file) == []


# --- code ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["97124", "97140", "97110"])
def test_value_set_codes_are_accepted(services: tuple[Code, ...], code: str) -> None:
    sr = referral()
    sr["code"] = {"coding": [{"system": SNOMED, "code": "3457005"}, {"system": CPT, "code": code}]}
    assert check(sr, services) == []


def test_text_without_coding_is_a_warning(services: tuple[Code, ...]) -> None:
    """Only text (a display-only coding is text too): staff read it and decide."""
    sr = referral()
    sr["code"] = {"coding": [{"display": "Massage"}], "text": "Massage for Jane's neck"}
    issue = only(check(sr, services))
    assert found([issue]) == [("warning", "code-invalid", ("ServiceRequest.code",))]
    assert "staff must confirm the text" in issue.diagnostics
    assert "Jane" not in issue.diagnostics


@pytest.mark.parametrize(
    ("code", "sent"),
    [
        # an office visit (CPT 99213) is not massage, whatever the text says (issue 13)
        (
            {"coding": [{"system": CPT, "code": "99213"}], "text": "Massage for Jane's neck"},
            f"{CPT}|99213",
        ),
        (
            {
                "coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}],
                "text": "Massage for Jane's neck",
            },
            f"{SNOMED}|3457005",
        ),
        ({"coding": [{"system": SNOMED, "code": "3457005"}]}, f"{SNOMED}|3457005"),
        ({"coding": [{"code": "97124"}]}, "None|97124"),  # a CPT code needs its system
        ({"coding": [{"system": CPT, "code": "97112"}], "text": "  "}, f"{CPT}|97112"),
        ({}, "no coding and no text"),
        ({"coding": [{"display": "Massage"}]}, "no coding and no text"),
    ],
)
def test_codes_outside_the_value_set_are_refused(
    services: tuple[Code, ...], code: dict[str, Any], sent: str
) -> None:
    sr = referral()
    sr["code"] = code
    issue = only(check(sr, services))
    assert found([issue]) == [("error", "code-invalid", ("ServiceRequest.code",))]
    assert sent in issue.diagnostics
    assert "Jane" not in issue.diagnostics
    for allowed in ("CPT 97124", "CPT 97140", "CPT 97110"):
        assert allowed in issue.diagnostics


def test_an_outside_code_is_accepted_next_to_a_value_set_code(services: tuple[Code, ...]) -> None:
    """A local order code or an office visit beside CPT 97140: the order includes massage."""
    sr = referral()
    sr["code"] = {
        "coding": [{"system": CPT, "code": "99213"}, {"system": CPT, "code": "97140"}],
        "text": "Office visit and manual therapy",
    }
    assert check(sr, services) == []


def test_missing_code_is_required(services: tuple[Code, ...]) -> None:
    sr = referral()
    del sr["code"]
    assert found(check(sr, services)) == [("error", "required", ("ServiceRequest.code",))]


# --- reasons -------------------------------------------------------------------------------


def _reason(*codes: tuple[str, str]) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code} for system, code in codes]}


@pytest.mark.parametrize("code", ["S13.4XXA", "S134XXA", "M54.50", "G44.209", "M62.830"])
def test_billable_diagnoses_are_accepted(services: tuple[Code, ...], code: str) -> None:
    sr = referral()
    sr["reasonCode"] = [_reason((ICD, code))]
    assert check(sr, services) == []


def test_header_code_is_refused_with_its_subcodes(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["reasonCode"] = [_reason((ICD, "M54.5"))]
    header, missing = check(sr, services)
    assert found([header, missing]) == [
        ("error", "code-invalid", ("ServiceRequest.reasonCode[0].coding[0].code",)),
        ("error", "required", ("ServiceRequest.reasonCode",)),
    ]
    assert "M54.5" in header.diagnostics
    assert "not billable" in header.diagnostics
    assert "M54.50" in header.diagnostics
    assert "reasonReference to a Condition" in missing.diagnostics


def test_every_icd_coding_must_be_billable(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["reasonCode"].append(_reason((SNOMED, "209571002"), (ICD, "M79.1")))
    issue = only(check(sr, services))
    assert found([issue]) == [
        ("error", "code-invalid", ("ServiceRequest.reasonCode[1].coding[1].code",))
    ]
    assert "M79.1" in issue.diagnostics


@pytest.mark.parametrize(
    ("code", "says"),
    [("XYZ.1", "not an ICD-10-CM code"), ("s13.4xxa", "did you mean S13.4XXA"), (None, "code")],
)
def test_unknown_diagnosis_is_refused(services: tuple[Code, ...], code: Any, says: str) -> None:
    sr = referral()
    sr["reasonCode"][0]["coding"].append({"system": ICD, "code": code})
    issue = only(check(sr, services))
    assert found([issue]) == [
        ("error", "code-invalid", ("ServiceRequest.reasonCode[0].coding[1].code",))
    ]
    assert says in issue.diagnostics


@pytest.mark.parametrize(
    "reference",
    [
        {"reference": "Condition/whiplash"},
        {"reference": "#dx"},
        {"reference": "https://ehr.example-ortho.org/fhir/Condition/whiplash"},
    ],
)
def test_condition_reference_is_a_reason(
    services: tuple[Code, ...], reference: dict[str, Any]
) -> None:
    sr = referral()
    sr["contained"] = [{"resourceType": "Condition", "id": "dx"}]
    sr["reasonCode"] = [_reason((SNOMED, "39848009"))]  # whiplash, but not ICD-10-CM
    sr["reasonReference"] = [reference]
    assert check(sr, services) == []


@pytest.mark.parametrize(
    "references",
    [[], [{"reference": "Observation/pain"}], [{"reference": "#dx"}], ["Condition/x"]],
)
def test_no_diagnosis_is_required(services: tuple[Code, ...], references: list[Any]) -> None:
    sr = referral()
    sr["contained"] = [{"resourceType": "Observation", "id": "dx"}]
    sr["reasonCode"] = [{"text": "neck pain"}]
    sr["reasonReference"] = references
    assert found(check(sr, services)) == [("error", "required", ("ServiceRequest.reasonCode",))]


# --- placer identifier ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "identifiers",
    [
        [],
        [{"system": "https://ehr.example-ortho.org/orders", "value": "RX-1"}],  # untyped
        [{**PLACER, "system": None}],
        [{**PLACER, "value": ""}],
        [{**PLACER, "type": {"coding": [{"system": V2, "code": "FILL"}]}}],
    ],
)
def test_placer_identifier_is_required(
    services: tuple[Code, ...], identifiers: list[dict[str, Any]]
) -> None:
    sr = referral()
    sr["identifier"] = identifiers
    assert found(check(sr, services)) == [("error", "required", ("ServiceRequest.identifier",))]


# --- warnings ------------------------------------------------------------------------------


def test_no_amount_is_a_warning(services: tuple[Code, ...]) -> None:
    sr = referral()
    del sr["occurrenceTiming"]
    issue = only(check(sr, services))
    assert found([issue]) == [("warning", "incomplete", ("ServiceRequest.occurrence",))]
    assert "how many visits, how often: not stated" in issue.diagnostics
    sr["quantityQuantity"] = {"value": 8}
    assert check(sr, services) == []


def test_no_insurance_is_a_warning_unless_coverage_is_known(services: tuple[Code, ...]) -> None:
    sr = referral()
    del sr["insurance"]
    assert found(check(sr, services)) == [("warning", "incomplete", ("ServiceRequest.insurance",))]
    assert check(sr, services, has_coverage=True) == []


@pytest.mark.parametrize(
    ("authored", "stale"),
    [
        ((TODAY - timedelta(days=90)).isoformat(), False),
        ((TODAY - timedelta(days=91)).isoformat(), True),
        (f"{TODAY - timedelta(days=91)}T09:30:00-05:00", True),
        ("2025-11", True),  # a month: its last day counts
        ("not a date", False),
    ],
)
def test_old_prescription_is_a_warning(
    services: tuple[Code, ...], authored: str, stale: bool
) -> None:
    sr = referral()
    sr["authoredOn"] = authored
    expected = [("warning", "business-rule", ("ServiceRequest.authoredOn",))] if stale else []
    issues = check(sr, services)
    assert found(issues) == expected
    assert all(authored not in i.diagnostics for i in issues)


# --- untrusted input -----------------------------------------------------------------------


def test_patient_data_never_reaches_diagnostics(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["contained"] = [CONTAINED_PATIENT]
    sr["subject"] = {"reference": "#pat", "display": "Jane Doe"}
    sr["status"] = "draft"
    sr["code"] = {"text": "Massage for Jane Doe, born 1980-04-12"}
    sr["reasonCode"] = [{"text": "Jane fell"}]
    sr["authoredOn"] = "2025-01-01"
    issues = check(sr, services)
    assert len(issues) == 4
    text = " ".join(i.diagnostics for i in issues)
    for phi in ("Jane", "Doe", "1980-04-12", "2025-01-01", "pat-7"):
        assert phi not in text


@pytest.mark.parametrize("sr", [None, "ServiceRequest", 42, [referral()]])
def test_not_an_object(services: tuple[Code, ...], sr: Any) -> None:
    assert found(check(sr, services)) == [("error", "structure", ("ServiceRequest",))]


JUNK = (None, 0, 1.5, True, "x", "", [], [None], {}, {"a": [1]})


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every element path of a JSON value (dict keys and list indexes)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield (*path, key)
        yield from _paths(value, (*path, key))


def _replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    copied = copy.deepcopy(node)
    parent = copied
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return copied


def test_any_element_of_any_type_never_raises(services: tuple[Code, ...]) -> None:
    sr = referral()
    sr["contained"] = [
        {"resourceType": "PractitionerRole", "id": "role", "practitioner": {"reference": "#doc"}},
        {"resourceType": "Practitioner", "id": "doc", "identifier": [_npi(GOOD_NPI)]},
    ]
    sr["requester"] = {"reference": "#role", "identifier": _npi(GOOD_NPI)}
    sr["reasonReference"] = [{"reference": "Condition/dx"}]
    facts = {"requester": {"practitioner": [1]}, "requester_practitioner": {"identifier": 5}}
    for path in _paths(sr):
        for junk in JUNK:
            issues = check(_replaced(sr, path, junk), services, **facts)
            assert all(isinstance(i, Issue) for i in issues)
            assert all(e.startswith("ServiceRequest") for i in issues for e in i.expression)
