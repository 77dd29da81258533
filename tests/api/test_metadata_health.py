"""CapabilityStatement and health probes."""

from __future__ import annotations

from fhir_bridge.fhir.search_params import SEARCH_PARAMS


def test_capability_statement_lists_exactly_what_is_implemented(client):
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200
    assert resp.mimetype == "application/fhir+json"
    body = resp.get_json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    assert body["kind"] == "instance"
    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert set(resources) == set(SEARCH_PARAMS) | {"CodeSystem", "ConceptMap", "Group"}
    assert {i["code"] for i in resources["Group"]["interaction"]} == {"read"}  # payers' Groups
    assert resources["ConceptMap"]["operation"][0]["name"] == "translate"
    assert {i["code"] for i in resources["CodeSystem"]["interaction"]} == {"read", "search-type"}
    obs = resources["Observation"]
    assert {i["code"] for i in obs["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "search-type",
    }
    assert "conditionalCreate" not in obs
    for writable in ("ServiceRequest", "Task"):
        entry = resources[writable]
        assert {i["code"] for i in entry["interaction"]} == {
            "read",
            "vread",
            "history-instance",
            "search-type",
            "create",
            "update",
        }
        assert entry["conditionalCreate"] is True
        assert entry["conditionalUpdate"] is False
        assert entry["updateCreate"] is True
    assert {i["code"] for i in body["rest"][0]["interaction"]} == {"transaction", "batch"}
    names = {p["name"] for p in obs["searchParam"]}
    assert {
        "patient",
        "subject",
        "category",
        "code",
        "date",
        "part-of",
        "based-on",
        "status",
        "_id",
        "_lastUpdated",
    } <= names
    assert "Observation:part-of" in obs["searchInclude"]
    assert "Observation:part-of" in resources["Procedure"]["searchRevInclude"]


def test_capability_statement_validates_as_r4(client):
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(client.get("/fhir/metadata").get_json())


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_checks_database_and_migrations(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["database"] == "reachable"


def test_readyz_fails_on_unmigrated_database(tmp_path):
    from fhir_bridge.app import create_app
    from fhir_bridge.settings import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", testing=True))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["migration"] is None
