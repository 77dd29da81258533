"""read, vread, history over HTTP: headers, conditional reads, error shapes."""

from __future__ import annotations

import pytest

from tests.factories import observation, patient, store_all

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def rivera(runtime):
    store_all(runtime, [patient("p1", "P-1", "Rivera", "Ana")])
    changed = patient("p1", "P-1", "Rivera", "Ana")
    changed["gender"] = "other"
    return store_all(runtime, [changed])[0]


def test_read_answers_current_version_with_etag_and_last_modified(client, rivera):
    resp = client.get("/fhir/Patient/p1")
    assert resp.status_code == 200
    assert resp.mimetype == FHIR_JSON
    assert resp.headers["ETag"] == 'W/"2"'
    assert resp.headers["Last-Modified"].endswith("GMT")
    body = resp.get_json()
    assert body["meta"]["versionId"] == "2"
    assert body["gender"] == "other"


def test_if_none_match_gives_304(client, rivera):
    assert client.get("/fhir/Patient/p1", headers={"If-None-Match": 'W/"2"'}).status_code == 304
    assert client.get("/fhir/Patient/p1", headers={"If-None-Match": 'W/"1"'}).status_code == 200


def test_if_modified_since_gives_304_until_the_resource_changes(client, rivera):
    last_modified = client.get("/fhir/Patient/p1").headers["Last-Modified"]
    assert (
        client.get("/fhir/Patient/p1", headers={"If-Modified-Since": last_modified}).status_code
        == 304
    )
    earlier = "Mon, 02 Nov 2020 10:00:00 GMT"
    assert client.get("/fhir/Patient/p1", headers={"If-Modified-Since": earlier}).status_code == 200


def test_vread_answers_old_version(client, rivera):
    resp = client.get("/fhir/Patient/p1/_history/1")
    assert resp.status_code == 200
    assert resp.headers["ETag"] == 'W/"1"'
    assert resp.get_json()["gender"] == "female"


def test_history_lists_versions_newest_first(client, rivera):
    body = client.get("/fhir/Patient/p1/_history").get_json()
    assert body["type"] == "history"
    assert body["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in body["entry"]] == ["2", "1"]
    assert body["entry"][1]["request"] == {"method": "POST", "url": "Patient"}
    assert body["entry"][0]["response"]["etag"] == 'W/"2"'


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/fhir/Patient/nobody", 404, "not-found"),
        ("/fhir/Patient/p1/_history/7", 404, "not-found"),
        ("/fhir/Patient/p1/_history/x", 404, "not-found"),
        ("/fhir/Spaceship/1", 404, "not-supported"),
        ("/fhir/Spaceship", 404, "not-supported"),
        ("/nowhere", 404, "not-found"),
    ],
)
def test_errors_are_operation_outcomes(client, rivera, path, status, code):
    resp = client.get(path)
    assert resp.status_code == status
    assert resp.mimetype == FHIR_JSON
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["severity"] == "error"
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/fhir/Patient/p1"),
        ("PATCH", "/fhir/Patient/p1"),
        ("PUT", "/fhir/Patient/p1"),
        ("POST", "/fhir/Patient"),
        ("PUT", "/fhir/Observation/o1"),
        ("DELETE", "/fhir/ServiceRequest/sr1"),
        ("PATCH", "/fhir/Task/t1"),
    ],
)
def test_unsupported_interactions_answer_405(client, rivera, method, path):
    """POST/PUT exist for ServiceRequest and Task only (fhir_write); the rest stays 405."""
    resp = client.open(path, method=method, json={"resourceType": path.split("/")[2]})
    assert resp.status_code == 405
    assert resp.get_json()["issue"][0]["code"] == "not-supported"
    assert "GET" in resp.headers["Allow"]


def test_405_on_writable_types_advertises_their_write_methods(client):
    assert client.delete("/fhir/ServiceRequest/sr1").headers["Allow"] == "GET, PUT"
    assert client.patch("/fhir/Task").headers["Allow"] == "GET, POST"
    assert client.post("/fhir/Patient", json={}).headers["Allow"] == "GET"


def test_deleted_resource_answers_410(client, runtime):
    from fhir_bridge.store.db import write_session
    from fhir_bridge.store.repository import ResourceStore

    store_all(runtime, [observation("o1", "p1")])
    with write_session(runtime.sessions) as session:
        ResourceStore(session).delete("Observation", "o1")
    resp = client.get("/fhir/Observation/o1")
    assert resp.status_code == 410
    assert resp.get_json()["issue"][0]["code"] == "deleted"


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"Accept": "application/fhir+json"}, "", 200),
        ({"Accept": "application/json"}, "", 200),
        ({"Accept": "application/fhir+json; fhirVersion=4.0"}, "", 200),
        ({"Accept": "*/*"}, "", 200),
        ({}, "?_format=json", 200),
        ({}, "?_format=application/fhir%2Bjson", 200),
        ({"Accept": "application/fhir+xml"}, "", 406),
        ({}, "?_format=xml", 406),
    ],
)
def test_content_negotiation(client, rivera, headers, query, status):
    resp = client.get(f"/fhir/Patient/p1{query}", headers=headers)
    assert resp.status_code == status
    assert resp.mimetype == FHIR_JSON


def test_pretty_output_is_indented(client, rivera):
    text = client.get("/fhir/Patient/p1?_pretty=true").get_data(as_text=True)
    assert "\n  " in text


def test_request_id_is_echoed_or_minted(client, rivera):
    assert (
        client.get("/fhir/Patient/p1", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    assert len(client.get("/fhir/Patient/p1").headers["X-Request-ID"]) == 32
