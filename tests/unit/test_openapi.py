"""The OpenAPI document of the internal session API is complete, consistent and self-describing."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_bridge.records.openapi import EXAMPLE_RECORD, openapi_spec
from fhir_bridge.records.schemas import load_session
from tests.unit.test_record_schema import EXAMPLE, TECHNIQUES, VOCABULARY

SERVER = "https://bridge.example.org"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return openapi_spec(server_url=SERVER)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_header(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.0.3"
    assert spec["servers"] == [{"url": SERVER}]
    assert spec["info"]["title"]
    json.dumps(spec)  # plain JSON, ready for jsonify


def test_operations_and_status_codes(spec: dict[str, Any]) -> None:
    sessions = spec["paths"]["/api/v1/sessions"]
    assert {"200", "201", "413", "422"} <= set(sessions["post"]["responses"])
    assert set(spec["paths"]["/api/v1/sessions/{session_id}"]["get"]["responses"]) >= {"200", "404"}
    params = {p["name"] for p in sessions["get"]["parameters"]}
    assert params == {"patient", "since", "_cursor", "_count"}


def test_responses_use_the_view_and_outcome_schemas(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/api/v1/sessions"]["post"]
    view = {"$ref": "#/components/schemas/SessionView"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == view
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == view
    for status in ("413", "422"):
        media = post["responses"][status]["content"]["application/fhir+json"]
        assert media["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}
    listing = spec["paths"]["/api/v1/sessions"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SessionList"
    }


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    names = set(spec["components"]["schemas"])
    refs = _refs(spec["paths"]) + _refs(spec["components"])
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in names


def test_record_schema_documents_the_contract(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    record = schemas["SessionRecord"]
    assert set(EXAMPLE) <= set(record["properties"])
    assert set(record["required"]) >= {"session_id", "status", "patient", "therapist"}
    assert record["properties"]["status"]["enum"] == ["completed", "entered-in-error"]
    assert record["properties"]["session_id"]["pattern"] == r"^[A-Za-z0-9\-\.]{1,64}$"
    minutes = schemas["Treatment"]["properties"]["minutes"]
    assert (minutes["type"], minutes["minimum"], minutes["maximum"]) == ("integer", 1, 120)
    assert schemas["Assessment"]["properties"]["phase"]["enum"] == ["pre", "post"]
    assert schemas["Assessment"]["properties"]["at"]["format"] == "date-time"
    assert schemas["Patient"]["properties"]["birth_date"]["format"] == "date"
    assert schemas["Patient"]["required"] == ["mrn"]
    assert schemas["Coverage"]["required"] == ["member_id", "payer_id"]


def test_every_record_and_view_field_is_described(spec: dict[str, Any]) -> None:
    for name, schema in spec["components"]["schemas"].items():
        if name == "OperationOutcome":
            continue
        for prop, body in schema["properties"].items():
            assert body.get("description"), f"{name}.{prop} has no description"


def test_view_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["SessionView"]["properties"]) >= {
        "session_id",
        "status",
        "received_at",
        "record",
        "resources",
        "billing",
        "flags",
    }
    assert set(schemas["ResourceRef"]["properties"]) == {"resourceType", "id", "versionId"}
    assert set(schemas["BillingLine"]["properties"]) == {"code", "system", "units", "minutes"}
    assert set(schemas["Flag"]["properties"]) == {"code", "message"}
    assert set(schemas["SessionList"]["properties"]) == {"sessions", "next"}


def test_examples_are_the_contract_record(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/api/v1/sessions"]["post"]
    assert post["requestBody"]["content"]["application/json"]["example"] == EXAMPLE
    assert EXAMPLE_RECORD == EXAMPLE
    load_session(copy.deepcopy(EXAMPLE_RECORD), vocabulary=VOCABULARY)  # and it is valid
    outcome = post["responses"]["422"]["content"]["application/fhir+json"]["example"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert all(issue["expression"] for issue in outcome["issue"])


def test_vocabulary_keys_become_enums() -> None:
    spec = openapi_spec(server_url=SERVER, vocabulary=VOCABULARY)
    schemas = spec["components"]["schemas"]
    assert schemas["Treatment"]["properties"]["technique"]["enum"] == sorted(TECHNIQUES)
    assert "neck" in schemas["Assessment"]["properties"]["body_site"]["enum"]
    assert "pain_nrs" in schemas["Goal"]["properties"]["measure"]["enum"]


def test_the_document_is_fresh_each_time(spec: dict[str, Any]) -> None:
    spec["paths"]["/api/v1/sessions"]["post"]["requestBody"]["content"]["application/json"][
        "example"
    ]["session_id"] = "changed"
    assert EXAMPLE_RECORD["session_id"] == "MMC-2026-000123"
    assert openapi_spec(server_url=SERVER) != spec


def test_every_operation_needs_a_bearer_token(spec: dict[str, Any]) -> None:
    assert spec["security"] == [{"smartBackendServices": []}]
    scheme = spec["components"]["securitySchemes"]["smartBackendServices"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
