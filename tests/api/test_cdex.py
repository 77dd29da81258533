"""Da Vinci CDex Task Data Requests, answered end to end with the payer's own scope."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
from fhir.resources.R4B.task import Task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_bridge.services.cdex import NOT_AVAILABLE
from tests.api.test_documentation import build_reviewed
from tests.support.tokens import bearer

FHIR_JSON = "application/fhir+json"
CDEX_TEMP = "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp"
HREX_TEMP = "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp"
MEMBER_ID = "XQZ123456789"  # the session example's coverage member id


@pytest.fixture
def reviewed(runtime, app):
    return build_reviewed(runtime, app)


def data_request(kind: str, value: dict, patient: dict | None = None) -> dict:
    return {
        "resourceType": "Task",
        "meta": {
            "profile": [
                "http://hl7.org/fhir/us/davinci-cdex/StructureDefinition/cdex-task-data-request"
            ],
            "tag": [{"system": CDEX_TEMP, "code": "claims-processing"}],
        },
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": CDEX_TEMP, "code": f"data-request-{kind}"}]},
        "for": patient or {"reference": "Patient/pat-rivera"},
        "authoredOn": "2026-11-29T08:00:00Z",
        "requester": {
            "identifier": {"system": "https://payers.example.org/payer-id", "value": "ACME"}
        },
        "owner": {
            "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1245319599"}
        },
        "input": [
            {"type": {"coding": [{"system": HREX_TEMP, "code": f"data-{kind}"}]}, **value},
            {
                "type": {"coding": [{"system": CDEX_TEMP, "code": "purpose-of-use"}]},
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                            "code": "COVERAGE",
                        }
                    ]
                },
            },
        ],
    }


def post_task(app, headers, body):
    return app.test_client().post(
        "/fhir/Task", data=json.dumps(body), content_type=FHIR_JSON, headers=headers
    )


def payer(app, org):
    return bearer(app, role="payer", organization=org, scope="system/*.rs system/Task.cru")


def test_a_query_request_is_completed_with_a_contained_searchset(reviewed):
    app, _, org = reviewed
    body = data_request(
        "query", {"valueString": "Observation?patient=their-own-id&code=http://loinc.org|72514-3"}
    )
    resp = post_task(app, payer(app, org), body)
    assert resp.status_code == 201, resp.get_json()
    task = resp.get_json()
    Task.model_validate(task)
    assert task["status"] == "completed"
    assert task["output"][0]["valueReference"] == {"reference": "#result"}
    [bundle] = [c for c in task["contained"] if c["id"] == "result"]
    assert bundle["type"] == "searchset"
    values = [e["resource"]["valueQuantity"]["value"] for e in bundle["entry"]]
    assert sorted(values) == sorted([7, 4, 5, 4, 3, 4])  # pain before and after, three visits
    assert all(
        e["resource"]["subject"]["reference"] == "Patient/pat-rivera" for e in bundle["entry"]
    )
    # the payer polls it
    polled = app.test_client().get(f"/fhir/Task/{task['id']}", headers=payer(app, org))
    assert polled.status_code == 200
    assert polled.get_json()["status"] == "completed"


@pytest.mark.parametrize(
    ("code", "title"),
    [
        ("11506-3", "Progress note"),
        ("18776-5", "Plan of care note"),
        ("28570-0", "Procedure note"),
        ("47420-5", "Functional status assessment note"),
    ],
)
def test_a_document_request_gets_a_readable_note(reviewed, code, title):
    app, _, org = reviewed
    body = data_request(
        "code",
        {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": code}]}},
        patient={"identifier": {"system": "https://example.org/member", "value": MEMBER_ID}},
    )
    resp = post_task(app, payer(app, org), body)
    assert resp.status_code == 201, resp.get_json()
    task = resp.get_json()
    Task.model_validate(task)
    assert task["status"] == "completed", task.get("statusReason")
    assert task["for"]["reference"] == "Patient/pat-rivera"
    [doc] = [c for c in task["contained"] if c["resourceType"] == "DocumentReference"]
    assert doc["type"]["coding"][0]["code"] == code
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"] == "text/html"
    page = base64.b64decode(attachment["data"]).decode()
    text = _render(page)
    assert title in text
    assert "Rivera" in text
    assert "Trigger point therapy" in text or code in ("18776-5",)
    if code != "28570-0":
        assert "7 -> 3" in text  # the pain course, first to latest before treatment


def _render(page: str) -> str:
    """Parse the HTML as a browser would (it must be well formed enough) and return its text."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Text()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>")
    return " ".join(parser.parts)


def test_a_patient_not_the_payers_member_is_rejected_like_an_unknown_one(reviewed):
    app, _, _ = reviewed
    other_payer = payer(app, "Organization/another-payer")
    query = {"valueString": "Observation"}
    for patient in ({"reference": "Patient/pat-rivera"}, {"reference": "Patient/nobody"}):
        resp = post_task(app, other_payer, data_request("query", query, patient))
        assert resp.status_code == 201
        task = resp.get_json()
        assert task["status"] == "rejected"
        assert "not a member" in task["statusReason"]["text"]
        assert "contained" not in task
        # the payer can poll its own rejected request
        polled = app.test_client().get(f"/fhir/Task/{task['id']}", headers=other_payer)
        assert polled.status_code == 200


OWN_BASE = "http://bridge.test/fhir"  # the test settings' public base URL + /fhir
QUERY = {"valueString": "Observation?code=http://loinc.org|72514-3"}


def test_task_for_as_an_absolute_url_on_this_bridge_is_the_patient(reviewed):
    """Official CDex examples send Task.for as <base>/Patient/<id> (issue 13)."""
    app, _, org = reviewed
    for url in (f"{OWN_BASE}/Patient/pat-rivera", "HTTP://Bridge.test/fhir/Patient/pat-rivera"):
        resp = post_task(app, payer(app, org), data_request("query", QUERY, {"reference": url}))
        assert resp.status_code == 201, resp.get_json()
        task = resp.get_json()
        assert task["status"] == "completed", task.get("statusReason")
        assert task["for"]["reference"] == "Patient/pat-rivera"
        [bundle] = [c for c in task["contained"] if c["id"] == "result"]
        assert len(bundle["entry"]) == 6


def test_a_patient_url_on_another_server_is_found_only_by_its_identifier(reviewed):
    """Another server's id means nothing here, even when it equals one of ours."""
    app, _, org = reviewed
    foreign = {"reference": "https://ehr.example.org/fhir/Patient/pat-rivera"}
    task = post_task(app, payer(app, org), data_request("query", QUERY, foreign)).get_json()
    assert task["status"] == "rejected"
    assert task["statusReason"]["text"] == NOT_AVAILABLE
    assert "for" not in task
    assert "contained" not in task
    with_member_id = {
        **foreign,
        "identifier": {"system": "https://example.org/member", "value": MEMBER_ID},
    }
    resp = post_task(app, payer(app, org), data_request("query", QUERY, with_member_id))
    task = resp.get_json()
    assert task["status"] == "completed", task.get("statusReason")
    assert task["for"]["reference"] == "Patient/pat-rivera"


def test_an_own_url_to_a_non_member_is_rejected_like_an_unknown_one(reviewed):
    app, _, org = reviewed
    for who, url in (
        (org, f"{OWN_BASE}/Patient/pat-other"),  # on file, not this payer's member
        (org, f"{OWN_BASE}/Patient/nobody"),
        ("Organization/another-payer", f"{OWN_BASE}/Patient/pat-rivera"),
    ):
        resp = post_task(app, payer(app, who), data_request("query", QUERY, {"reference": url}))
        assert resp.status_code == 201, resp.get_json()
        task = resp.get_json()
        assert (task["status"], task["statusReason"]["text"]) == ("rejected", NOT_AVAILABLE)
        assert "contained" not in task


@pytest.mark.parametrize(
    "reference", ["https://ehr.example.org/fhir/Group/7", "Patient", "urn:uuid:1", "#patient"]
)
def test_task_for_that_names_no_patient_is_a_422(reviewed, reference):
    app, _, org = reviewed
    resp = post_task(app, payer(app, org), data_request("query", QUERY, {"reference": reference}))
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == ["Task.for"]


@pytest.mark.parametrize(
    ("code", "input_type", "value", "reason"),
    [
        # CDex 2.1 data-request-questionnaire (a DTR Questionnaire)
        (
            "data-request-questionnaire",
            {"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/temp", "code": "questionnaire"},
            {"valueCanonical": "http://example.org/cdex-questionnaire-example1"},
            "Questionnaire data requests (DTR, input type questionnaire) are not supported",
        ),
        # an input type the bridge does not know (not a real CDex code: made up for the test)
        (
            "data-request-code",
            {"system": CDEX_TEMP, "code": "made-up-input"},
            {"valueString": "x"},
            "Input type made-up-input is not supported",
        ),
    ],
)
def test_a_request_of_an_unsupported_kind_is_stored_rejected_with_the_reason(
    reviewed, code, input_type, value, reason
):
    """Answered at once, never left 'requested' for the payer to poll forever."""
    app, _, org = reviewed
    body = data_request("query", QUERY)
    body["code"]["coding"][0]["code"] = code
    body["input"][0] = {"type": {"coding": [input_type]}, **value}
    resp = post_task(app, payer(app, org), body)
    assert resp.status_code == 201, resp.get_json()
    task = resp.get_json()
    assert task["status"] == "rejected"
    assert task["statusReason"]["text"].startswith(reason)
    assert "for" not in task  # a refusal joins no patient's compartment
    polled = app.test_client().get(f"/fhir/Task/{task['id']}", headers=payer(app, org))
    assert polled.get_json()["status"] == "rejected"


def test_an_unsupported_document_code_is_rejected_with_the_supported_ones(reviewed):
    app, _, org = reviewed
    body = data_request(
        "code",
        {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "34117-2"}]}},
    )
    task = post_task(app, payer(app, org), body).get_json()
    assert task["status"] == "rejected"
    assert "11506-3" in task["statusReason"]["text"]
    assert "18842-5" in task["statusReason"]["text"]


def test_a_malformed_request_is_a_422_naming_the_element(reviewed):
    app, _, org = reviewed
    body = data_request("query", {"valueString": "Observation"})
    body["input"] = body["input"][1:]  # only the purpose of use
    resp = post_task(app, payer(app, org), body)
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == ["Task.input"]


def test_another_payers_task_is_invisible(reviewed):
    app, _, org = reviewed
    task = post_task(
        app, payer(app, org), data_request("query", {"valueString": "Goal"})
    ).get_json()
    assert task["status"] == "completed"
    stranger = payer(app, "Organization/another-payer")
    assert app.test_client().get(f"/fhir/Task/{task['id']}", headers=stranger).status_code == 404


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    # a named function: Hypothesis reads a lambda's source to check it recurses, which can fail
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    _containers,
    max_leaves=6,
)
FIELDS = ["code", "for", "input", "intent", "status", "requester", "owner", "contained", "meta"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(FIELDS),
    value=JSON_VALUES | JSON_VALUES.map(lambda v: {"coding": v}) | JSON_VALUES.map(lambda v: [v]),
    in_input=st.booleans(),
)
def test_no_shape_of_data_request_gets_a_5xx(app, field, value, in_input):
    body = data_request("query", {"valueString": "Observation"})
    if in_input:
        body["input"][0][field if field != "input" else "valueString"] = value
    else:
        body[field] = value
    headers = bearer(
        app, role="payer", organization="Organization/p", scope="system/*.rs system/Task.c"
    )
    resp = post_task(app, headers, body)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code >= 400:
        assert all(i.get("expression") for i in resp.get_json()["issue"])


@pytest.mark.parametrize(
    "raw",
    [
        b"9" * 5000,  # past Python's 4,300-digit int limit
        b"9" * 25,  # past 64 bits
        b"[" * 400 + b"]" * 400,  # past validation's recursion
        b'{"a":' * 2000 + b"1" + b"}" * 2000,  # past the parser's recursion
    ],
    ids=["5000-digits", "25-digits", "400-deep", "2000-deep"],
)
@pytest.mark.parametrize("field", ["input", "code", "meta"])
def test_no_huge_or_deep_data_request_gets_a_5xx(app, raw, field):
    body = json.dumps(data_request("query", {"valueString": "Observation"})).encode()
    data = body[:-1] + b', "' + field.encode() + b'x": ' + raw + b"}"
    headers = bearer(
        app, role="payer", organization="Organization/p", scope="system/*.rs system/Task.c"
    )
    resp = app.test_client().post("/fhir/Task", data=data, content_type=FHIR_JSON, headers=headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert all(i.get("expression") for i in resp.get_json()["issue"])


def test_a_payer_cannot_send_referrals_or_write_through_bundles(reviewed):
    app, sr_id, org = reviewed
    headers = bearer(app, role="payer", organization=org, scope="system/*.cruds")
    client = app.test_client()
    referral = client.get(f"/fhir/ServiceRequest/{sr_id}").get_json()
    for method, url, body in (
        ("POST", "/fhir/ServiceRequest", {**referral, "id": None}),
        ("PUT", f"/fhir/ServiceRequest/{sr_id}", referral),
        (
            "POST",
            "/fhir",
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {k: v for k, v in referral.items() if k != "id"},
                        "request": {"method": "POST", "url": "ServiceRequest"},
                    }
                ],
            },
        ),
        ("POST", "/fhir/Task", {"resourceType": "Task", "status": "requested", "intent": "order"}),
    ):
        resp = client.open(
            url, method=method, data=json.dumps(body), content_type=FHIR_JSON, headers=headers
        )
        assert resp.status_code == 403, (method, url)
        assert resp.get_json()["issue"][0]["code"] == "forbidden"
