"""The official HL7 examples in ``tests/fixtures/interop/``, sent the way a client sends them.

Every file is answered right: accepted, or refused with a precise ``expression`` and a reason,
and no Task is left ``requested`` for a sender to poll forever. The answer per file is pinned
in ``EXPECTED`` (the README's "Official examples" lists the refusals and why).

How each is sent: a ServiceRequest to ``POST /fhir/ServiceRequest`` and Bundles to ``POST
/fhir`` (admin: the examples are about content, not which EHR owns them); a Task to ``POST
/fhir/Task`` with a payer's token (every Task here is a payer's CDex request); any other
resource as the one POST entry of a transaction (admin).

The bridge's public base is ``http://example.org``: the CDex examples' data source (their
``owner`` is ``http://example.org/fhir/Organization/cdex-example-provider``), so their
absolute ``Task.for`` names a Patient on this server. That patient is a member of the payer
(``Member123`` on its Coverage), with conditions and HbA1c results to find.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fhir_bridge.app import create_app
from fhir_bridge.mapping.cdex import QUESTIONNAIRE_UNSUPPORTED
from fhir_bridge.services.cdex import NOT_AVAILABLE
from fhir_bridge.services.runtime import build_runtime
from tests.factories import condition, coverage, observation, organization, store_all
from tests.support.tokens import bearer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interop"
FILES = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json"))
FHIR_JSON = "application/fhir+json"
PAYER = "Organization/cdex-example-payer"
PATIENT = "cdex-example-patient"
MEMBER_IDS = "http://example.org/cdex/payer/member-ids"
UNSUPPORTED_DOC = (
    "Unsupported document type; supported LOINC: 11506-3, 18776-5, 18842-5, 28570-0, 47420-5"
)
PAYER_ONLY_DATA_REQUESTS = "A payer may only POST Da Vinci CDex data-request Tasks"
NOT_REQUESTED = "A new CDex data request has status 'requested'"
#: CDex attachment requests (PAS codes): no data request, no referral
ATTACHMENT_REQUESTS = (
    "cdex/cdex-task-example19.json",
    "cdex/cdex-task-example20.json",
    "cdex/cdex-task-example22.json",
)


@dataclass(frozen=True)
class Expect:
    """The pinned answer to one file."""

    status: int
    #: refusals: (expression, words of its diagnostics) of every error issue
    errors: tuple[tuple[str, str], ...] = ()
    #: a Bundle's answer: each entry's status code
    entries: tuple[int, ...] = ()
    #: a CDex Task's answer: its status and what ``statusReason.text`` starts with
    task: tuple[str, str] | None = None
    #: a completed CDex query: the ids in the contained searchset
    found: tuple[str, ...] = ()


def _accepted(entries: int = 1) -> Expect:
    return Expect(200, entries=(201,) * entries)


def _not_writable(rtype: str) -> Expect:
    return Expect(405, (("Bundle.entry[0].request.url", f"POST of {rtype} is not supported"),))


def _rejected(reason: str) -> Expect:
    return Expect(201, task=("rejected", reason))


EXPECTED: dict[str, Expect] = {
    # US Core: demographics and conditions are taken in; Observations are the clinic's own
    # output (sessions API), never written over FHIR
    "us-core/Condition-encounter-diagnosis-example1.json": _accepted(),
    "us-core/Condition-health-concern-example.json": _accepted(),
    "us-core/Patient-example.json": _accepted(),
    "us-core/Practitioner-practitioner-1.json": _accepted(),
    "us-core/Practitioner-practitioner-2.json": _accepted(),
    **{
        f"us-core/Observation-{name}.json": _not_writable("Observation")
        for name in (
            "EVS-item-example-68516-4",
            "EVS-item-example-89555-7",
            "EVS-panel-example-89574-8",
            "PHQ9-item-example-44250-9",
            "PHQ9-panel-example-44249-1",
            "blood-pressure",
            "simple-observation-cognitive-status",
            "simple-observation-functional-status",
        )
    },
    # CRD
    "crd/coverage-example.json": _accepted(),
    "crd/organization-example.json": _accepted(),
    "crd/servicerequest-example.json": Expect(
        422,
        (
            ("ServiceRequest.status", "status 'draft' is not accepted"),
            ("ServiceRequest.requester", "the requester's NPI is required"),
            ("ServiceRequest.code", "http://snomed.info/sct|25267002 is not in the massage"),
            ("ServiceRequest.reasonCode", "needs an ICD-10-CM diagnosis"),
            ("ServiceRequest.identifier", "the placer identifier is required"),
        ),
    ),
    # a batch of reads and searches (issue 13), each answered as the same GET would be:
    # Patient/123 is not on file (404); Encounter is not a type the bridge serves (404, as
    # GET [base]/Encounter?... is); the Coverage and PractitionerRole searches answer 200
    # with a searchset each (empty here)
    "crd/Bundle-search-request.json": Expect(200, entries=(404, 404, 200, 200)),
    # CDex: a searchset is an answer, not something to write
    "cdex/cdex-searchbundle-scenario1-example.json": Expect(
        400, (("Bundle.type", "Bundle.type must be transaction or batch"),)
    ),
    # CDex data requests, answered at once
    "cdex/cdex-task-example1.json": Expect(  # member number, Condition query
        201, task=("completed", ""), found=("cond-active-1", "cond-active-2")
    ),
    "cdex/cdex-task-example10.json": Expect(  # absolute Task.for on this server, HbA1c query
        201, task=("completed", ""), found=("obs-hba1c-2019",)
    ),
    "cdex/cdex-task-example4.json": _rejected(UNSUPPORTED_DOC),  # free-text data-code
    "cdex/cdex-task-example6.json": _rejected(UNSUPPORTED_DOC),  # 34117-2 H&P note
    "cdex/cdex-task-example21.json": _rejected(UNSUPPORTED_DOC),  # 11504-8 operation note
    "cdex/cdex-task-example26.json": _rejected(QUESTIONNAIRE_UNSUPPORTED),
    # answered Tasks (completed, with the data source's output) are not new requests
    **{
        f"cdex/cdex-task-example{n}.json": Expect(422, (("Task.status", NOT_REQUESTED),))
        for n in (2, 3, 5)
    },
    # attachment requests (PAS codes; the answer goes to the payer's $submit-attachment)
    **{
        name: Expect(403, (("http.Authorization", PAYER_ONLY_DATA_REQUESTS),))
        for name in ATTACHMENT_REQUESTS
    },
}


@pytest.fixture
def bridge(settings, runtime):
    """The bridge as the CDex examples' data source, with the payer's member on file."""
    rt = build_runtime(replace(settings, public_base_url="http://example.org"))
    member = coverage("cov-member123", PATIENT, "cdex-example-payer", "Member123")
    member["identifier"][0]["system"] = MEMBER_IDS
    resolved = condition("cond-resolved", PATIENT, "M54.50")
    resolved["clinicalStatus"]["coding"][0]["code"] = "resolved"
    store_all(
        rt,
        [
            {
                "resourceType": "Patient",
                "id": PATIENT,
                "name": [{"family": "Testpatient", "given": ["Cdex"]}],
                "gender": "female",
                "birthDate": "1970-01-01",
            },
            organization("cdex-example-payer", "Payer XYZ"),
            member,
            condition("cond-active-1", PATIENT, "M54.2"),
            condition("cond-active-2", PATIENT, "S13.4XXA"),
            resolved,
            _hba1c("obs-hba1c-2019", "2019-04-01T09:00:00Z", 6.1),
            _hba1c("obs-hba1c-2017", "2017-04-01T09:00:00Z", 6.4),
        ],
    )
    yield create_app(runtime=rt)
    rt.dispose()


def _hba1c(oid: str, effective: str, percent: float) -> dict[str, Any]:
    """LOINC 4548-4 (Hemoglobin A1c/Hemoglobin.total in Blood), what CDex example 10 asks for."""
    obs = observation(oid, PATIENT, code="4548-4", category="laboratory", effective=effective)
    obs["code"]["text"] = "Hemoglobin A1c"
    obs["valueQuantity"] = {
        "value": percent,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    return obs


def _transaction(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
        ],
    }


def send(app, resource: dict[str, Any], *, as_admin_task: bool = False):
    """POST the example where a client would, with the token that client would hold."""
    admin = bearer(app, role="admin")
    kind = resource["resourceType"]
    if kind == "Task" and not as_admin_task:
        token = bearer(app, role="payer", organization=PAYER, scope="system/*.rs system/Task.cru")
        url, body = "/fhir/Task", resource
    elif kind in ("ServiceRequest", "Task"):
        token, url, body = admin, f"/fhir/{kind}", resource
    elif kind == "Bundle":
        token, url, body = admin, "/fhir", resource
    else:
        token, url, body = admin, "/fhir", _transaction(resource)
    return app.test_client().post(url, data=json.dumps(body), content_type=FHIR_JSON, headers=token)


def test_every_fixture_has_a_pinned_answer():
    assert sorted(EXPECTED) == FILES


@pytest.mark.parametrize("name", FILES)
def test_each_official_example_is_answered_right(bridge, name):
    expect = EXPECTED[name]
    resource = json.loads((FIXTURES / name).read_text())
    resp = send(bridge, resource)
    body = resp.get_json()
    assert resp.status_code == expect.status, body
    if body["resourceType"] == "OperationOutcome":
        errors = [i for i in body["issue"] if i["severity"] in ("error", "fatal")]
        assert all(i.get("expression") and i.get("diagnostics") for i in body["issue"])
        assert [i["expression"] for i in errors] == [[where] for where, _ in expect.errors]
        for issue, (_, words) in zip(errors, expect.errors, strict=True):
            assert words in issue["diagnostics"]
    elif body["resourceType"] == "Bundle":
        statuses = [int(e["response"]["status"].split()[0]) for e in body["entry"]]
        assert statuses == list(expect.entries)
        for i, entry in enumerate(body["entry"]):
            if statuses[i] >= 400:
                [issue] = entry["response"]["outcome"]["issue"]
                assert issue["expression"] == [f"Bundle.entry[{i}].request.url"]
                assert issue["diagnostics"]
    else:
        _check_task(body, expect)


def _check_task(task: dict[str, Any], expect: Expect) -> None:
    assert expect.task is not None
    status, reason = expect.task
    assert task["status"] == status, task.get("statusReason")
    if status == "rejected":
        assert task["statusReason"]["text"].startswith(reason)
        assert "contained" not in task or all(c["id"] != "result" for c in task["contained"])
        return
    assert task["for"]["reference"] == f"Patient/{PATIENT}"
    [result] = [c for c in task["contained"] if c["id"] == "result"]
    assert result["type"] == "searchset"
    assert sorted(e["resource"]["id"] for e in result["entry"]) == sorted(expect.found)


def test_a_patient_on_another_server_is_not_ours_even_with_the_same_id(settings, runtime, bridge):
    """CDex example 10 sent to a bridge at another base: its Task.for is someone else's."""
    other = build_runtime(replace(settings, public_base_url="http://bridge.test"))
    app = create_app(runtime=other)
    try:
        resource = json.loads((FIXTURES / "cdex/cdex-task-example10.json").read_text())
        task = send(app, resource).get_json()
        assert (task["status"], task["statusReason"]["text"]) == ("rejected", NOT_AVAILABLE)
        assert "for" not in task
    finally:
        other.dispose()


@pytest.mark.parametrize("name", ATTACHMENT_REQUESTS)
def test_an_attachment_request_sent_by_the_clinic_is_refused_at_task_code(bridge, name):
    """Never a 201 Task stuck at 'requested', whoever sends it."""
    resource = json.loads((FIXTURES / name).read_text())
    resp = send(bridge, resource, as_admin_task=True)
    assert resp.status_code == 422, resp.get_json()
    [issue] = [i for i in resp.get_json()["issue"] if i["severity"] == "error"]
    assert issue["expression"] == ["Task.code"]


def test_the_crd_order_sent_by_an_ehr_gets_the_same_content_answer(bridge):
    """An EHR learns what to fix in its order (422 with the rules), not only that it may not."""
    resource = json.loads((FIXTURES / "crd/servicerequest-example.json").read_text())
    token = bearer(
        bridge, role="ehr", organization="Organization/example", scope="system/*.rs system/*.cu"
    )
    resp = bridge.test_client().post(
        "/fhir/ServiceRequest", data=json.dumps(resource), content_type=FHIR_JSON, headers=token
    )
    assert resp.status_code == 422, resp.get_json()
    errors = [i for i in resp.get_json()["issue"] if i["severity"] == "error"]
    expected = EXPECTED["crd/servicerequest-example.json"].errors
    assert [i["expression"] for i in errors] == [[where] for where, _ in expected]
