"""A session whose ODI arrives item by item: the Observation carries the score, the stored
record the items (both databases)."""

from __future__ import annotations

import copy

from fhir_bridge.records.openapi import EXAMPLE_RECORD

LOINC_ODI = "97909-6"


def test_odi_items_are_scored_and_kept(client):
    body = copy.deepcopy(EXAMPLE_RECORD)
    body["session_id"] = "ODI-1"
    items = [2, 3, 1, 2, 2, 1, 3, 2, 2, None]
    [index] = [
        i
        for i, a in enumerate(body["assessments"])
        if (a["measure"], a["phase"]) == ("oswestry_disability_index", "pre")
    ]
    body["assessments"][index] = {
        "phase": "pre",
        "measure": "oswestry_disability_index",
        "items": items,
    }
    resp = client.post("/api/v1/sessions", json=body)
    assert resp.status_code == 201, resp.get_json()
    observations = [
        client.get(f"/fhir/Observation/{r['id']}").get_json()
        for r in resp.get_json()["resources"]
        if r["resourceType"] == "Observation"
    ]
    [odi] = [o for o in observations if o["code"]["coding"][0]["code"] == LOINC_ODI]
    assert odi["valueQuantity"]["value"] == 40  # 18 / (5 x 9) x 100
    stored = client.get("/api/v1/sessions/ODI-1").get_json()
    [kept] = [
        a for a in stored["record"]["assessments"] if a["measure"] == "oswestry_disability_index"
    ]
    assert kept["items"] == items
    refused = copy.deepcopy(body)
    refused["session_id"] = "ODI-2"
    refused["assessments"][index]["value"] = 50
    bad = client.post("/api/v1/sessions", json=refused)
    assert bad.status_code == 422
    [issue] = bad.get_json()["issue"]
    assert issue["expression"] == [f"assessments[{index}].value"]
