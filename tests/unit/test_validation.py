"""validate_resource / require_valid: what a peer sees in the OperationOutcome."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.outcome import FhirError
from fhir_bridge.fhir.validation import require_valid, validate_resource

FIXTURES = Path(__file__).parent / "fixtures" / "validation"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def found(resource: object, **kwargs: Any) -> list[tuple[str, str]]:
    """(code, expression) of every issue; expression '' when there is none."""
    return [
        (i.code, i.expression[0] if i.expression else "")
        for i in validate_resource(resource, **kwargs)
    ]


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "pain"}, **extra}


def service_request(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


# --- official examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Patient-example.json",
        "Practitioner-practitioner-1.json",
        "Observation-blood-pressure.json",
        "servicerequest-example.json",
        "coverage-example.json",
        "cdex-task-example22.json",
        "cdex-searchbundle-scenario1-example.json",
        "Condition-encounter-diagnosis-example1.json",
    ],
)
def test_official_examples_are_valid(name: str) -> None:
    resource = load(name)
    assert validate_resource(resource) == []
    # the same document with one stray element is caught: the example really was checked
    resource["colour"] = "red"
    assert found(resource) == [("structure", f"{resource['resourceType']}.colour")]


def test_official_example_parsed_with_exact_decimals_is_valid() -> None:
    text = (FIXTURES / "Observation-blood-pressure.json").read_bytes()
    resource = jsonio.loads(text)
    assert validate_resource(resource) == []
    resource["component"][0]["valueQuantity"]["value"] = "1.50.0"
    assert found(resource) == [("value", "Observation.component[0].valueQuantity.value")]


def test_r5_shaped_procedure_is_rejected_naming_occurrence_datetime() -> None:
    issues = validate_resource(load("Procedure-rehab.json"))
    assert [(i.code, i.expression) for i in issues] == [
        ("structure", ("Procedure.occurrenceDateTime",))
    ]
    assert "occurrenceDateTime" in issues[0].diagnostics


# --- the resource itself -------------------------------------------------------------------


@pytest.mark.parametrize("value", [[], "Patient", 42, None])
def test_non_object_is_one_structure_issue(value: object) -> None:
    assert found(value) == [("structure", "")]


def test_missing_resource_type_is_required() -> None:
    assert found({"id": "x"}) == [("required", "resourceType")]


@pytest.mark.parametrize("name", ["Nope", "Quantity", "Resource", "observation"])
def test_unknown_resource_type_is_not_supported(name: str) -> None:
    assert found({"resourceType": name}) == [("not-supported", "resourceType")]


def test_expected_type_mismatch_is_invalid() -> None:
    issues = validate_resource({"resourceType": "Patient"}, expected_type="Observation")
    assert [(i.code, i.expression) for i in issues] == [("invalid", ("resourceType",))]
    assert "Observation" in issues[0].diagnostics
    assert validate_resource({"resourceType": "Patient"}, expected_type="Patient") == []


# --- errors from the model, as FHIRPath -----------------------------------------------------


def test_bad_value_inside_bundle_entry_gets_of_type_path() -> None:
    bad = load("Observation-blood-pressure.json")
    bad["component"][1]["valueQuantity"]["value"] = "high"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": load("Patient-example.json")}, {"resource": bad}],
    }
    assert found(bundle) == [
        ("value", "Bundle.entry[1].resource.ofType(Observation).component[1].valueQuantity.value")
    ]


def test_bad_value_inside_parameters_resource_gets_of_type_path() -> None:
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "resource": {"resourceType": "Patient", "active": []}}],
    }
    assert ("structure", "Parameters.parameter[0].resource.ofType(Patient).active") in found(params)


def test_unknown_element_is_structure_issue() -> None:
    assert found(observation(colour="red")) == [("structure", "Observation.colour")]


def test_missing_status_is_reported_even_next_to_another_error() -> None:
    # the library checks required primitives only when the model has no other error
    resource = {"resourceType": "Observation", "code": {"text": "pain"}, "statuss": "final"}
    assert sorted(found(resource)) == [
        ("required", "Observation.status"),
        ("structure", "Observation.statuss"),
    ]


def test_two_value_x_point_at_the_resource() -> None:
    resource = observation(valueString="mild", valueInteger=2)
    issues = validate_resource(resource)
    assert [(i.code, i.expression) for i in issues] == [("value", ("Observation",))]
    assert "value[x]" in issues[0].diagnostics


def test_task_input_without_value_is_required() -> None:
    task = load("cdex-task-example22.json")
    del task["input"][0]["valueCanonical"], task["input"][0]["_valueCanonical"]
    assert found(task) == [("required", "Task.input[0].value")]


def test_primitive_extension_path_drops_the_underscore() -> None:
    resource = observation(_status={"extension": [{"valueString": "x"}]})
    assert found(resource) == [("required", "Observation.status.extension[0].url")]


def test_diagnostics_do_not_echo_the_value() -> None:
    patient = {"resourceType": "Patient", "birthDate": "Jane Q Smith 1980"}
    issues = validate_resource(patient)
    assert [(i.code, i.expression) for i in issues] == [("value", ("Patient.birthDate",))]
    assert "Jane" not in issues[0].diagnostics


def test_object_given_for_a_uri_is_an_issue_not_a_crash() -> None:
    patient = {"resourceType": "Patient", "implicitRules": {"url": "x"}}
    assert found(patient) == [("structure", "Patient.implicitRules")]


# --- value sets --------------------------------------------------------------------------------


def test_bogus_status_is_code_invalid_listing_allowed_codes() -> None:
    issues = validate_resource(service_request(status="bogus"))
    assert [(i.code, i.expression) for i in issues] == [
        ("code-invalid", ("ServiceRequest.status",))
    ]
    assert "draft" in issues[0].diagnostics
    assert "entered-in-error" in issues[0].diagnostics
    assert "bogus" not in issues[0].diagnostics


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (service_request(intent="referral"), "ServiceRequest.intent"),
        ({"resourceType": "Patient", "gender": "M"}, "Patient.gender"),
        (
            {
                "resourceType": "Goal",
                "lifecycleStatus": "done",
                "description": {"text": "x"},
                "subject": {"reference": "Patient/p1"},
            },
            "Goal.lifecycleStatus",
        ),
        ({"resourceType": "Bundle", "type": "list"}, "Bundle.type"),
        (
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": "Patient"}},
                    {"request": {"method": "get", "url": "Patient"}},
                ],
            },
            "Bundle.entry[1].request.method",
        ),
    ],
)
def test_code_outside_required_value_set(resource: dict[str, Any], expression: str) -> None:
    assert found(resource) == [("code-invalid", expression)]


def test_status_checked_inside_bundle_and_contained_resources() -> None:
    task = load("cdex-task-example22.json")
    task["contained"][0]["gender"] = "f"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": observation(status="done")}, {"resource": task}],
    }
    assert found(bundle) == [
        ("code-invalid", "Bundle.entry[0].resource.ofType(Observation).status"),
        (
            "code-invalid",
            "Bundle.entry[1].resource.ofType(Task).contained[0].ofType(Patient).gender",
        ),
    ]


def test_condition_status_checked_only_for_the_hl7_system() -> None:
    condition = load("Condition-encounter-diagnosis-example1.json")
    condition["clinicalStatus"]["coding"].append({"system": "http://example.org", "code": "x"})
    assert validate_resource(condition) == []
    condition["clinicalStatus"]["coding"][0]["code"] = "cured"
    assert found(condition) == [("code-invalid", "Condition.clinicalStatus.coding[0].code")]


# --- ids -------------------------------------------------------------------------------------


def test_id_longer_than_64_characters_is_rejected() -> None:
    assert validate_resource({"resourceType": "Patient", "id": "a" * 64}) == []
    assert found({"resourceType": "Patient", "id": "a" * 65}) == [("value", "Patient.id")]


def test_element_id_must_be_a_fhir_id() -> None:
    patient = {"resourceType": "Patient", "name": [{"id": "n 1", "family": "Doe"}]}
    assert found(patient) == [("value", "Patient.name[0].id")]


# --- empty elements and nulls ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "code", "expression"),
    [
        ({"code": {}}, "structure", "Observation.code"),
        ({"identifier": []}, "structure", "Observation.identifier"),
        ({"note": [{"text": ""}]}, "value", "Observation.note[0].text"),
        ({"note": [{"text": "  \t"}]}, "value", "Observation.note[0].text"),
        ({"issued": None}, "structure", "Observation.issued"),
        ({"category": [{"text": "vital"}, {}]}, "structure", "Observation.category[1]"),
        ({"identifier": [None]}, "structure", "Observation.identifier[0]"),
    ],
)
def test_empty_elements_are_rejected(extra: dict[str, Any], code: str, expression: str) -> None:
    assert (code, expression) in found(observation(**extra))


def test_null_only_allowed_to_align_a_primitive_array_with_its_extensions() -> None:
    aligned = {
        "given": ["Ann", None],
        "_given": [None, {"extension": [{"url": "http://x.org/e", "valueString": "B."}]}],
    }
    assert validate_resource({"resourceType": "Patient", "name": [aligned]}) == []
    patient = {"resourceType": "Patient", "name": [{"given": ["Ann", None]}]}
    assert found(patient) == [("structure", "Patient.name[0].given[1]")]


# --- references --------------------------------------------------------------------------------


def test_reference_to_wrong_type_is_invalid() -> None:
    issues = validate_resource(service_request(requester={"reference": "Location/l1"}))
    assert [(i.code, i.expression) for i in issues] == [("invalid", ("ServiceRequest.requester",))]
    assert "Location" in issues[0].diagnostics
    assert "Practitioner" in issues[0].diagnostics


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (
            service_request(performer=[{"reference": "Patient/p"}, {"reference": "Group/g"}]),
            "ServiceRequest.performer[1]",
        ),
        (
            observation(
                subject={"reference": "https://ehr.example/fhir/Organization/o/_history/2"}
            ),
            "Observation.subject",
        ),
        (
            {
                "resourceType": "Coverage",
                "status": "active",
                "beneficiary": {"reference": "Group/g"},
                "payor": [{"reference": "Organization/o"}],
            },
            "Coverage.beneficiary",
        ),
        (
            {
                "resourceType": "Procedure",
                "status": "completed",
                "subject": {"reference": "Patient/p"},
                "performer": [{"actor": {"reference": "Location/l"}}],
            },
            "Procedure.performer[0].actor",
        ),
    ],
)
def test_reference_targets_follow_r4(resource: dict[str, Any], expression: str) -> None:
    assert found(resource) == [("invalid", expression)]


@pytest.mark.parametrize(
    "ref",
    [
        {"reference": "#patient"},
        {"reference": "urn:uuid:2b1b4e4e-6f0e-4d4c-9d2a-1e0f3c7f5a10"},
        {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}},
        {"display": "Dr. Crusher"},
        {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567893"},
        {"reference": "http://example.org/fhir/PractitionerRole/pr1/_history/3"},
    ],
)
def test_reference_styles_not_checked_or_allowed(ref: dict[str, Any]) -> None:
    resource = service_request(requester=ref, performer=[{"reference": "Location/l1"}])
    assert found(resource) == [("invalid", "ServiceRequest.performer[0]")]


def test_reference_to_unknown_type_is_rejected_even_where_any_is_allowed() -> None:
    task = load("cdex-task-example22.json")
    task["for"] = {"reference": "Somebody/1"}
    assert found(task) == [("value", "Task.for")]


def test_reference_on_this_server_must_be_type_and_id() -> None:
    base = "https://bridge.example/fhir"
    good = service_request(requester={"reference": f"{base}/Practitioner/d1"})
    bad = service_request(requester={"reference": f"{base}/practitioners/d1"})
    assert validate_resource(good, base=base) == []
    assert found(bad, base=base) == [("value", "ServiceRequest.requester")]
    assert validate_resource(bad) == []


# --- nested resources ---------------------------------------------------------------------------


def test_unknown_nested_resource_type_is_reported_not_raised() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Nope"}}, {"resource": {"active": True}}],
    }
    assert found(bundle) == [
        ("not-supported", "Bundle.entry[0].resource.resourceType"),
        ("required", "Bundle.entry[1].resource.resourceType"),
    ]


# --- valid FHIR the library rejects -----------------------------------------------------------


def test_primitive_extension_on_extension_value_is_accepted_but_checked() -> None:
    patient = load("Patient-example.json")
    patient["extension"].append(
        {
            "url": "http://example.org/fhir/StructureDefinition/preferred-pronoun",
            "valueCode": "they",
            "_valueCode": {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/display",
                        "valueString": "they/them",
                    }
                ]
            },
        }
    )
    before = copy.deepcopy(patient)
    assert validate_resource(patient) == []
    assert patient == before  # validated a copy; the stored original keeps _valueCode
    patient["extension"][-1]["_valueCode"]["id"] = "x y"
    n = len(patient["extension"]) - 1
    assert found(patient) == [("value", f"Patient.extension[{n}].valueCode.id")]


def test_r4_value_meta_extension_is_accepted() -> None:
    ext = {"url": "http://example.org/e", "valueMeta": {"versionId": "2"}}
    assert validate_resource({"resourceType": "Patient", "extension": [ext]}) == []
    ext["valueMeta"]["lastUpdated"] = "yesterday"
    assert found({"resourceType": "Patient", "extension": [ext]}) == [
        ("value", "Patient.extension[0].valueMeta.lastUpdated")
    ]


# --- require_valid --------------------------------------------------------------------------


def test_require_valid_raises_with_status_and_issues() -> None:
    with pytest.raises(FhirError) as caught:
        require_valid(service_request(status="bogus"), status=400)
    assert caught.value.status == 400
    assert [i.expression for i in caught.value.issues] == [("ServiceRequest.status",)]


def test_require_valid_default_status_and_expected_type() -> None:
    with pytest.raises(FhirError) as caught:
        require_valid(load("coverage-example.json"), expected_type="ServiceRequest")
    assert caught.value.status == 422
    require_valid(load("coverage-example.json"), expected_type="Coverage")
