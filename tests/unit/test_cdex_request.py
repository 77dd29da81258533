"""read_request: what a CDex Task Data Request asks, and for which patient (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_bridge.mapping.cdex import (
    CDEX_TEMP,
    HREX_TEMP,
    RequestProblem,
    read_request,
)

SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"  # DTR questionnaire input type
OWN = "https://bridge.example.org/fhir"
MEMBER = {"system": "https://payer.example.org/member", "value": "M-1"}


def task(subject: Any, *, code: str = "data-request-query", what: str = "data-query") -> dict:
    value: dict[str, Any] = {"valueString": "Observation?code=72514-3"}
    if what == "questionnaire":
        value = {"valueCanonical": "http://example.org/cdex-questionnaire-example1"}
    system = SDC_TEMP if what == "questionnaire" else HREX_TEMP
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": CDEX_TEMP, "code": code}]},
        "for": subject,
        "input": [{"type": {"coding": [{"system": system, "code": what}]}, **value}],
    }


@pytest.mark.parametrize(
    ("subject", "reference", "identifier"),
    [
        ({"reference": "Patient/p-1"}, "Patient/p-1", None),
        ({"reference": "Patient/p-1/_history/3"}, "Patient/p-1", None),
        ({"reference": f"{OWN}/Patient/p-1"}, "Patient/p-1", None),
        ({"reference": f"{OWN}/Patient/p-1/_history/2"}, "Patient/p-1", None),
        ({"reference": "https://BRIDGE.example.org/fhir/Patient/p-1"}, "Patient/p-1", None),
        # another server: its id is never ours; its identifier may find the patient here
        ({"reference": "https://ehr.example.org/fhir/Patient/p-1"}, None, None),
        ({"reference": "https://bridge.example.org/other/Patient/p-1"}, None, None),
        (
            {"reference": "https://ehr.example.org/fhir/Patient/p-1", "identifier": MEMBER},
            None,
            MEMBER,
        ),
        # identifier wins over our own URL (the brief: by its identifier if the Task has one)
        ({"reference": f"{OWN}/Patient/p-1", "identifier": MEMBER}, None, MEMBER),
        ({"identifier": MEMBER}, None, MEMBER),
    ],
)
def test_task_for_is_read_as_a_local_reference_or_an_identifier(subject, reference, identifier):
    request = read_request(task(subject), own_base=OWN)
    assert (request.patient_reference, request.patient_identifier) == (reference, identifier)
    assert request.unsupported is None


@pytest.mark.parametrize(
    "subject",
    [
        None,
        "Patient/p-1",
        {"reference": "Group/g-1"},
        {"reference": "https://ehr.example.org/fhir/Group/g-1"},
        {"reference": "#patient"},
        {"identifier": {"system": "x"}},
    ],
)
def test_task_for_naming_no_patient_is_a_problem_at_task_for(subject):
    with pytest.raises(RequestProblem) as problem:
        read_request(task(subject), own_base=OWN)
    assert problem.value.expression == "Task.for"


def test_without_an_own_base_no_absolute_url_is_local():
    request = read_request(task({"reference": f"{OWN}/Patient/p-1"}))
    assert request.patient_reference is None


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("data-request-questionnaire", "questionnaire"),
        ("data-request-questionnaire", "data-query"),  # the code says what is asked
    ],
)
def test_a_questionnaire_request_is_read_as_unsupported(code, what):
    request = read_request(task({"reference": "Patient/p-1"}, code=code, what=what))
    assert request.kind == "other"
    assert "Questionnaire data requests" in (request.unsupported or "")


def test_an_hrex_request_with_only_a_questionnaire_input_is_unsupported():
    body = task({"identifier": MEMBER}, what="questionnaire")
    body["code"] = {"coding": [{"system": HREX_TEMP, "code": "data-request"}]}
    assert read_request(body).unsupported is not None


@pytest.mark.parametrize("status", ["completed", "in-progress", "draft", None, 7])
def test_only_a_requested_task_is_a_new_request(status):
    """The official examples of answered Tasks (completed, with output) are not new requests."""
    body = task({"reference": "Patient/p-1"})
    body["status"] = status
    with pytest.raises(RequestProblem) as problem:
        read_request(body)
    assert problem.value.expression == "Task.status"


def test_an_input_type_the_bridge_does_not_know_is_unsupported_and_named():
    body = task({"reference": "Patient/p-1"}, code="data-request-code")
    body["input"][0] = {
        "type": {"coding": [{"system": CDEX_TEMP, "code": "data-image"}]},
        "valueString": "x-ray",
    }
    request = read_request(body)
    assert request.unsupported is not None
    assert request.unsupported.startswith("Input type data-image is not supported")


def test_only_qualifying_inputs_are_a_problem_at_task_input():
    """Purpose of use alone asks for nothing: malformed (422), not an unsupported kind."""
    body = task({"reference": "Patient/p-1"})
    body["input"][0]["type"]["coding"][0] = {"system": CDEX_TEMP, "code": "purpose-of-use"}
    with pytest.raises(RequestProblem) as problem:
        read_request(body)
    assert problem.value.expression == "Task.input"


@pytest.mark.parametrize("odd", [{}, [], 7, None, {"a": [1]}])
def test_odd_json_in_input_types_never_raises_anything_but_a_request_problem(odd):
    body = task({"reference": "Patient/p-1"})
    body["input"].append({"type": {"coding": [{"system": odd, "code": odd}]}})
    assert read_request(body).kind == "query"
