"""HTTP: CodeSystem / ConceptMap search and read, $translate (GET and POST), and the 4xx answers."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

BASE = "http://fhir-bridge.org/fhir"
TECHNIQUE = f"{BASE}/CodeSystem/massage-technique"
CPT = "http://www.ama-assn.org/go/cpt"
FHIR_JSON = "application/fhir+json"


def _outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def _params(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "Parameters"
    out: dict[str, Any] = {"match": []}
    for p in body["parameter"]:
        if p["name"] == "match":
            out["match"].append({part["name"]: _value(part) for part in p["part"]})
        else:
            out[p["name"]] = _value(p)
    return out


def _value(param: dict[str, Any]) -> Any:
    return next(v for k, v in param.items() if k.startswith("value"))


# --- search and read ------------------------------------------------------------------------


def test_list_code_systems(client: FlaskClient) -> None:
    response = client.get("/fhir/CodeSystem")
    assert response.status_code == 200
    assert response.mimetype == FHIR_JSON
    bundle = response.get_json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 4
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert "massage-technique" in ids
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"http://bridge.test/fhir/CodeSystem/{entry['resource']['id']}"
    assert entry["search"] == {"mode": "match"}


def test_search_concept_maps_by_url_and_id(client: FlaskClient) -> None:
    url = f"{BASE}/ConceptMap/technique-to-cpt"
    by_url = client.get("/fhir/ConceptMap", query_string={"url": url}).get_json()
    assert [e["resource"]["id"] for e in by_url["entry"]] == ["technique-to-cpt"]
    assert by_url["link"][0]["url"].startswith("http://bridge.test/fhir/ConceptMap?url=")
    by_ids = client.get("/fhir/ConceptMap?_id=measure-to-loinc,body-site-to-snomed").get_json()
    assert by_ids["total"] == 2
    none = client.get("/fhir/CodeSystem?_id=unknown").get_json()
    assert none["total"] == 0
    assert "entry" not in none


def test_unknown_search_parameter_is_400(client: FlaskClient) -> None:
    issue = _outcome(client.get("/fhir/CodeSystem?name=x"), 400)
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["name"]


def test_unknown_search_parameter_lenient(client: FlaskClient) -> None:
    response = client.get("/fhir/CodeSystem?name=x", headers={"Prefer": "handling=lenient"})
    assert response.status_code == 200
    bundle = response.get_json()
    assert bundle["total"] == 4
    assert bundle["entry"][-1]["search"] == {"mode": "outcome"}
    assert bundle["entry"][-1]["resource"]["issue"][0]["severity"] == "warning"


def test_read(client: FlaskClient) -> None:
    cs = client.get("/fhir/CodeSystem/massage-measure")
    assert cs.status_code == 200
    assert cs.get_json()["url"] == f"{BASE}/CodeSystem/massage-measure"
    cm = client.get("/fhir/ConceptMap/technique-to-snomed")
    assert cm.get_json()["resourceType"] == "ConceptMap"


@pytest.mark.parametrize("path", ["/fhir/CodeSystem/nope", "/fhir/ConceptMap/nope"])
def test_read_unknown_is_404(client: FlaskClient, path: str) -> None:
    assert _outcome(client.get(path), 404)["code"] == "not-found"


# --- $translate -----------------------------------------------------------------------------


def test_translate_get(client: FlaskClient) -> None:
    response = client.get(
        "/fhir/ConceptMap/$translate",
        query_string={"system": TECHNIQUE, "code": "swedish_massage", "targetsystem": CPT},
    )
    assert response.status_code == 200
    answer = _params(response.get_json())
    assert answer["result"] is True
    assert answer["match"][0]["concept"]["code"] == "97124"


def test_translate_get_on_one_map(client: FlaskClient) -> None:
    response = client.get(
        "/fhir/ConceptMap/technique-to-snomed/$translate",
        query_string={"system": TECHNIQUE, "code": "swedish_massage"},
    )
    answer = _params(response.get_json())
    assert answer["result"] is False
    assert answer["match"][0]["equivalence"] == "unmatched"


def test_translate_post_system_and_code(client: FlaskClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "system", "valueUri": TECHNIQUE},
            {"name": "code", "valueCode": "cupping"},
        ],
    }
    response = client.post("/fhir/ConceptMap/$translate", json=body, content_type=FHIR_JSON)
    assert response.status_code == 200
    answer = _params(response.get_json())
    assert answer["result"] is True
    assert answer["match"][0]["concept"]["code"] == "231097002"


def test_translate_post_coding_on_one_map(client: FlaskClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "coding",
                "valueCoding": {"system": f"{BASE}/CodeSystem/massage-measure", "code": "pain_nrs"},
            },
        ],
    }
    response = client.post("/fhir/ConceptMap/measure-to-loinc/$translate", json=body)
    answer = _params(response.get_json())
    assert answer["result"] is True
    assert answer["match"][0]["concept"]["code"] == "72514-3"


def test_translate_missing_code_get(client: FlaskClient) -> None:
    issue = _outcome(
        client.get("/fhir/ConceptMap/$translate", query_string={"system": TECHNIQUE}), 400
    )
    assert issue["code"] == "required"
    assert issue["expression"] == ["code"]


def test_translate_missing_code_post(client: FlaskClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [{"name": "system", "valueUri": TECHNIQUE}]}
    issue = _outcome(client.post("/fhir/ConceptMap/$translate", json=body), 400)
    assert issue["code"] == "required"
    assert issue["expression"] == ["Parameters.parameter.where(name = 'code')"]


def test_translate_unknown_map_is_404(client: FlaskClient) -> None:
    response = client.get("/fhir/ConceptMap/nope/$translate?system=x&code=y")
    assert _outcome(response, 404)["code"] == "not-found"


def test_translate_unsupported_parameter(client: FlaskClient) -> None:
    query = {"system": TECHNIQUE, "code": "cupping", "reverse": "true"}
    issue = _outcome(client.get("/fhir/ConceptMap/$translate", query_string=query), 400)
    assert issue["expression"] == ["reverse"]
    lenient = client.get(
        "/fhir/ConceptMap/$translate", query_string=query, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", FHIR_JSON, 400),
        (b'{"resourceType": "Patient"}', FHIR_JSON, 400),
        (b"system=x&code=y", "application/x-www-form-urlencoded", 415),
    ],
)
def test_translate_post_bad_bodies(
    client: FlaskClient, data: bytes, content_type: str, status: int
) -> None:
    response = client.post("/fhir/ConceptMap/$translate", data=data, content_type=content_type)
    _outcome(response, status)


def test_translate_post_wrong_value_type(client: FlaskClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "system", "valueUri": TECHNIQUE},
            {"name": "code", "valueInteger": 3},
        ],
    }
    issue = _outcome(client.post("/fhir/ConceptMap/$translate", json=body), 400)
    assert issue["expression"] == ["Parameters.parameter[1].valueCode"]
