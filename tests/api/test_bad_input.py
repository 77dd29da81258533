"""Hostile input on every write and search path: a 4xx OperationOutcome naming what is wrong,
never a 5xx. Huge numbers, deep nesting, oversized bodies, tampered paging cursors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.tokens import bearer

FHIR_JSON = "application/fhir+json"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles" / "sessions"
EHR_ORG = "Organization/org-ehr"
MAX_DEPTH = 100  # fhir_bridge.fhir.jsonio.MAX_DEPTH (tests/unit/test_jsonio.py pins it)
BIG = "9" * 5000  # Python's int() refuses more than 4,300 digits
#: (method, path, content type) of every endpoint that takes a JSON body
JSON_WRITES = [
    ("POST", "/fhir", FHIR_JSON),
    ("POST", "/fhir/ServiceRequest", FHIR_JSON),
    ("POST", "/fhir/Task", FHIR_JSON),
    ("PUT", "/fhir/ServiceRequest/sr-1", FHIR_JSON),
    ("PUT", "/fhir/Task/task-1", FHIR_JSON),
    ("POST", "/api/v1/sessions", "application/json"),
    ("POST", "/api/v1/referrals/ref-1/decline", "application/json"),
    ("POST", "/fhir/ConceptMap/$translate", FHIR_JSON),
]
#: (path, extra query) of every endpoint that pages with _cursor
CURSOR_PATHS = [
    ("/fhir/Patient", {}),
    ("/fhir/Observation", {"_sort": "-date"}),
    ("/fhir/Patient", {"_sort": "_id"}),
    ("/fhir/Patient", {"_sort": "_lastUpdated"}),
    ("/fhir/Patient/pat-1/$everything", {}),
    ("/api/v1/sessions", {}),
    ("/api/v1/referrals", {}),
    ("/api/v1/deliveries", {}),
]


def nested(levels: int, inner: str = "1") -> str:
    return '{"a":' * levels + inner + "}" * levels


def hostile_bodies() -> dict[str, str]:
    """Named bodies each of which once answered 500 on some path."""

    def resource(rtype: str, value: str) -> str:
        return '{"resourceType":"' + rtype + '","status":"active","x":' + value + "}"

    return {
        "5000-digit integer": resource("ServiceRequest", BIG),
        "5000-digit negative integer": resource("Task", "-" + BIG),
        "5000-digit decimal": resource("Bundle", BIG + ".5"),
        "5000-digit exponent": resource("Parameters", "1e" + BIG),
        "nested 400 objects": '{"resourceType":"Bundle","type":"transaction","entry":['
        + nested(400)
        + "]}",
        "nested 400 arrays": "[" * 400 + "]" * 400,
        "nested 100000 arrays": "[" * 100_000 + "]" * 100_000,
        "nested 1 past the limit": nested(MAX_DEPTH + 1),
        "unpaired surrogate": resource("ServiceRequest", r'"note \ud800"'),
    }


def cursor(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


TAMPERED_CURSORS = {
    "huge snapshot": cursor({"s": 10**30, "k": None, "p": 1, "f": True}),
    "huge row": cursor({"s": 1, "k": "2020-01-01T00:00:00", "p": 10**20, "f": True}),
    "5000-digit row": base64.urlsafe_b64encode(
        b'{"s":1,"k":null,"p":' + BIG.encode() + b',"f":true}'
    )
    .decode()
    .rstrip("="),
    "negative row": cursor({"s": 1, "k": None, "p": -5, "f": True}),
    "object key": cursor({"s": 1, "k": {"a": 1}, "p": 1, "f": True}),
    "list key": cursor({"s": 1, "k": [1], "p": 1, "f": True}),
    "NUL in key": cursor({"s": 1, "k": "a\x00b", "p": 1, "f": True}),
    "string direction": cursor({"s": 1, "k": None, "p": 1, "f": "yes"}),
    "a list": cursor([1, 2, 3]),
    "huge plain row id": base64.urlsafe_b64encode(b"9" * 30).decode(),
    "NUL plain": base64.urlsafe_b64encode(b"1\x002").decode(),
    "not base64": "%%%",
}

#: only a search sorted by a date reads the key as a date
DATE_KEY_CURSORS = {
    "bad date key": cursor({"s": 1, "k": "zzz", "p": 1, "f": False}),
    "aware date key": cursor({"s": 1, "k": "2020-01-01T00:00:00+05:00", "p": 1, "f": True}),
    "no date key": cursor({"s": 1, "k": None, "p": 1, "f": True}),
}


def ehr(app) -> dict[str, str]:
    return bearer(app, role="ehr", organization=EHR_ORG, scope="system/*.cruds")


def assert_outcome_with_expression(resp, status: int | None = None) -> dict[str, Any]:
    body = resp.get_data(as_text=True)
    assert resp.status_code < 500, body[:500]
    if status is not None:
        assert resp.status_code == status, body[:500]
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    for issue in outcome["issue"]:
        assert issue.get("expression"), issue
    return outcome


@pytest.mark.parametrize(("method", "path", "content_type"), JSON_WRITES)
@pytest.mark.parametrize("name", list(hostile_bodies()))
def test_hostile_json_is_a_400_naming_the_body_on_every_write_path(
    client, method, path, content_type, name
):
    data = hostile_bodies()[name]
    resp = client.open(path, method=method, data=data, content_type=content_type)
    outcome = assert_outcome_with_expression(resp, 400)
    assert "invalid JSON" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("name", list(hostile_bodies()))
def test_an_external_clients_hostile_bundle_is_a_400_and_audited(app, client, name):
    """The security layer peeks into a Bundle for its types, before and after the view."""
    resp = client.post(
        "/fhir", data=hostile_bodies()[name], content_type=FHIR_JSON, headers=ehr(app)
    )
    assert_outcome_with_expression(resp, 400)
    events = client.get("/fhir/AuditEvent?_count=100").get_json().get("entry", [])
    assert len(events) == 1


def test_a_session_note_with_an_unpaired_surrogate_is_a_400_not_a_mapping_failure(client):
    """It passed the record schema and then failed FHIR validation of the Procedure (a 500)."""
    record = json.loads((SAMPLES / "whiplash-neck-pain.json").read_text())
    record["notes"]["subjective"] = "SURROGATE"
    data = json.dumps(record).replace("SURROGATE", "pain \\ud83d worse")
    resp = client.post("/api/v1/sessions", data=data, content_type="application/json")
    outcome = assert_outcome_with_expression(resp, 400)
    assert "surrogate" in outcome["issue"][0]["diagnostics"]


def test_a_20_digit_integer_is_kept_exactly_or_refused_never_a_500(client):
    """Beyond 64 bits the JSON writer cannot write an int: such numbers stay exact decimals."""
    body = {"resourceType": "Parameters", "parameter": [{"name": "x", "valueInteger": 10**20}]}
    resp = client.post("/fhir/ConceptMap/$translate", data=json.dumps(body), content_type=FHIR_JSON)
    assert_outcome_with_expression(resp)
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "priority": 10**20}
    resp = client.post("/fhir/Task", data=json.dumps(task), content_type=FHIR_JSON)
    assert_outcome_with_expression(resp)


def test_a_6_mb_bundle_is_a_413_and_its_audit_event_is_written(app, client):
    big = b'{"resourceType":"Bundle","type":"transaction","entry":[],"x":"' + b"x" * (6 << 20)
    resp = client.post("/fhir", data=big + b'"}', content_type=FHIR_JSON, headers=ehr(app))
    outcome = assert_outcome_with_expression(resp, 413)
    assert outcome["issue"][0]["code"] == "too-long"
    (entry,) = client.get("/fhir/AuditEvent?_count=100").get_json()["entry"]
    event = entry["resource"]
    assert event["agent"][0]["who"]["reference"] == EHR_ORG
    assert event["outcome"] != "0"  # a failure, recorded as such


def test_a_6_mb_body_on_every_write_path_is_a_413(app, client):
    for method, path, content_type in JSON_WRITES:
        data = b'{"x":"' + b"x" * (6 << 20) + b'"}'
        resp = client.open(path, method=method, data=data, content_type=content_type)
        assert_outcome_with_expression(resp, 413)


@pytest.mark.parametrize(("path", "query"), CURSOR_PATHS)
@pytest.mark.parametrize("name", list(TAMPERED_CURSORS))
def test_a_tampered_cursor_is_a_400_naming_the_cursor(client, path, query, name):
    resp = client.get(path, query_string={**query, "_cursor": TAMPERED_CURSORS[name]})
    outcome = assert_outcome_with_expression(resp, 400)
    assert outcome["issue"][0]["expression"] == ["_cursor"]


@pytest.mark.parametrize("sort", ["-date", "date", "_lastUpdated", "-_lastUpdated"])
@pytest.mark.parametrize("name", list(DATE_KEY_CURSORS))
def test_a_tampered_date_cursor_is_a_400_naming_the_cursor(client, sort, name):
    query = {"_sort": sort, "_cursor": DATE_KEY_CURSORS[name]}
    outcome = assert_outcome_with_expression(
        client.get("/fhir/Observation", query_string=query), 400
    )
    assert outcome["issue"][0]["expression"] == ["_cursor"]


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**40), 10**40)
    | st.text(max_size=8)
    | st.sampled_from(["2020-01-01T00:00:00", "\x00", "1e999", "pat-1"])
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.sampled_from(CURSOR_PATHS),
    raw=st.one_of(
        st.fixed_dictionaries(
            {
                "s": JSON_SCALARS,
                "k": JSON_SCALARS | st.lists(JSON_SCALARS, max_size=2),
                "p": JSON_SCALARS,
                "f": JSON_SCALARS,
            }
        ),
        st.dictionaries(st.text(max_size=2), JSON_SCALARS, max_size=4),
        JSON_SCALARS,
    ),
)
def test_no_cursor_gets_a_5xx(client, target, raw):
    path, query = target
    resp = client.get(path, query_string={**query, "_cursor": cursor(raw)})
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    if resp.status_code >= 400:
        assert all(i.get("expression") for i in resp.get_json()["issue"])


@st.composite
def hostile_json(draw: st.DrawFn) -> str:
    """A body with a huge number or deep nesting somewhere inside a plausible resource."""
    kind = draw(st.sampled_from(["digits", "nesting", "both", "nul"]))
    digits = draw(st.integers(19, 6000))
    number = draw(st.sampled_from(["", "-"])) + "7" * digits
    number += draw(st.sampled_from(["", ".25", "e5", "E-3"]))
    levels = draw(st.integers(MAX_DEPTH - 3, 1200))
    opener = draw(st.sampled_from(["[", '{"a":']))
    closer = "]" if opener == "[" else "}"
    inner = number if kind != "nesting" else "1"
    value = opener * levels + inner + closer * levels if kind != "digits" else inner
    if kind == "nul":  # PostgreSQL text cannot hold one
        value = draw(st.sampled_from([r'"a\u0000b"', r'{"text": "\u0000"}', r'["\u0000"]']))
    rtype = draw(st.sampled_from(["Bundle", "ServiceRequest", "Task", "Parameters"]))
    field = draw(st.sampled_from(["x", "quantityInteger", "entry", "input", "parameter"]))
    return f'{{"resourceType":"{rtype}","type":"transaction","{field}":{value}}}'


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(write=st.sampled_from(JSON_WRITES), body=hostile_json(), as_ehr=st.booleans())
def test_no_hostile_body_gets_a_5xx(app, client, write, body, as_ehr):
    method, path, content_type = write
    headers = ehr(app) if as_ehr else {}
    resp = client.open(path, method=method, data=body, content_type=content_type, headers=headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    if resp.status_code >= 400:
        assert all(i.get("expression") for i in resp.get_json()["issue"])


#: (path, parameter) pairs of the search and paging parameters that read numbers or dates
SEARCH_PARAMETERS = [
    ("/fhir/Patient", "_count"),
    ("/fhir/Patient", "birthdate"),
    ("/fhir/Patient", "_lastUpdated"),
    ("/fhir/Patient", "_id"),
    ("/fhir/Patient", "gender"),
    ("/fhir/Observation", "date"),
    ("/fhir/Observation", "subject"),
    ("/fhir/Patient/pat-1/_history", "_count"),
    ("/fhir/Patient/pat-1/_history", "_since"),
    ("/fhir/Patient/pat-1/$everything", "_count"),
    ("/fhir/Patient/pat-1/$everything", "start"),
    ("/api/v1/sessions", "_count"),
    ("/api/v1/sessions", "since"),
    ("/api/v1/referrals", "_count"),
    ("/api/v1/referrals", "requester"),
    ("/api/v1/deliveries", "_count"),
]
HOSTILE_VALUES = st.sampled_from(
    [
        BIG,
        "9" * 30,
        "²",
        "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes, the database says no
        "ap" + BIG,
        "ap0001",
        "ap9999-12-31",
        "ge" + "9" * 30 + "-01-01",
        "-1",
        "1e999",
    ]
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=st.sampled_from(SEARCH_PARAMETERS), value=HOSTILE_VALUES)
def test_no_hostile_search_value_gets_a_5xx(client, target, value):
    path, name = target
    resp = client.get(path, query_string={name: value})
    assert resp.status_code < 500, resp.get_data(as_text=True)[:500]
    if resp.status_code >= 400:
        assert all(i.get("expression") for i in resp.get_json()["issue"])


@pytest.mark.parametrize("version", ["9" * 5000, "9" * 19, "²", "\u0661"])
def test_a_hostile_version_id_is_a_404(client, version):
    resp = client.get(f"/fhir/Patient/pat-1/_history/{version}")
    assert resp.status_code == 404
