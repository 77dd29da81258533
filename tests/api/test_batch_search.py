"""GET search entries in batch and transaction Bundles (issue 13).

FHIR R4 http.html#transaction: a ``GET Type?params`` entry answers ``200 OK`` with the
searchset the same ``GET [base]/Type?params`` answers. Each test compares the entry with that
direct search, for the same token: a Bundle never shows what the direct search would not.
"""

from __future__ import annotations

import pytest

from tests.api.test_access_matrix import PAYERS, all_pages, entitled, matrix, patient_of
from tests.api.test_access_policy import audit_events, get_entry, payer, post_bundle
from tests.support.tokens import bearer

__all__ = ["matrix"]  # the fixture, shared with the access matrix

BASE = "http://bridge.test"


def _status(entry: dict) -> int:
    return int(entry["response"]["status"].split()[0])


def _ids(bundle: dict, mode: str = "match") -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def _entries(app, headers, kind: str, urls: list[str]) -> list[dict]:
    resp = post_bundle(app, headers, kind, [get_entry(u) for u in urls])
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["type"] == f"{kind}-response"
    return body["entry"]


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_a_search_entry_answers_the_direct_searchset_for_an_admin(matrix, kind):
    headers = bearer(matrix)
    url = "Observation?code=http://loinc.org|72514-3&_count=7"
    direct = matrix.test_client().get(f"/fhir/{url}", headers=headers).get_json()
    read, search = _entries(matrix, headers, kind, ["Patient/p01", url])
    assert _status(read) == 200
    assert read["resource"]["id"] == "p01"
    assert search["response"]["status"] == "200 OK"
    found = search["resource"]
    assert found["resourceType"] == "Bundle"
    assert found["type"] == "searchset"
    assert _ids(found) == _ids(direct)
    assert len(_ids(found)) == 7  # a full page, so paging is exercised
    links = {lk["relation"]: lk["url"] for lk in found["link"]}
    direct_links = {lk["relation"]: lk["url"] for lk in direct["link"]}
    assert links["self"] == direct_links["self"]
    assert links["self"].startswith(f"{BASE}/fhir/Observation?")
    assert links["next"].startswith(direct_links["self"] + "&_cursor=")
    # the next link is the ordinary search URL: following it continues the same search
    rest, _ = all_pages(matrix.test_client(), links["next"].removeprefix(BASE), headers)
    everything, _ = all_pages(matrix.test_client(), f"/fhir/{url}", headers)
    assert _ids(found) + [f"Observation/{o['id']}" for o in rest] == [
        f"Observation/{o['id']}" for o in everything
    ]


@pytest.mark.parametrize("who", PAYERS)
def test_a_payer_search_entry_returns_only_its_entitled_patients(matrix, who):
    headers = payer(matrix, who)
    urls = ["Patient?_count=100", "Observation?_count=100", "Coverage?_count=100"]
    for url, entry in zip(urls, _entries(matrix, headers, "batch", urls), strict=True):
        assert _status(entry) == 200, entry
        found = entry["resource"]
        assert "next" not in {lk["relation"] for lk in found["link"]}
        direct = matrix.test_client().get(f"/fhir/{url}", headers=headers).get_json()
        assert _ids(found) == _ids(direct), url
        matched = [e["resource"] for e in found["entry"]]
        assert {patient_of(r) for r in matched} == entitled(who), url


def test_a_search_entry_with_include_brings_the_included_resources(matrix):
    headers = payer(matrix, "payer-a")
    url = "Observation?_include=Observation:patient&_count=100"
    (entry,) = _entries(matrix, headers, "batch", [url])
    found = entry["resource"]
    direct = matrix.test_client().get(f"/fhir/{url}", headers=headers).get_json()
    assert _ids(found, "include") == _ids(direct, "include")
    assert {i.split("/")[1] for i in _ids(found, "include")} == entitled("payer-a")


def test_a_search_entry_on_a_type_the_token_may_not_search_is_forbidden(matrix):
    headers = payer(matrix, "payer-a", scope="system/Observation.rs")
    direct = matrix.test_client().get("/fhir/Patient?_id=p00", headers=headers)
    assert direct.status_code == 403
    obs, patients = _entries(matrix, headers, "batch", ["Observation?_count=1", "Patient?_id=p00"])
    assert _status(obs) == 200
    assert _ids(obs["resource"])
    assert _status(patients) == 403
    issue = patients["response"]["outcome"]["issue"][0]
    assert issue["code"] == "forbidden"
    assert issue["expression"] == ["Bundle.entry[1].request.url"]
    # AuditEvent is for clinic administrators: a payer's search of it is refused too
    (audit,) = _entries(matrix, payer(matrix, "payer-a"), "batch", ["AuditEvent"])
    assert _status(audit) == 403
    # in a transaction the refusal fails the whole Bundle
    resp = post_bundle(
        matrix, headers, "transaction", [get_entry("Observation"), get_entry("Patient")]
    )
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["expression"] == ["Bundle.entry[1].request.url"]


def test_a_read_only_token_cannot_search_through_a_batch(matrix):
    headers = payer(matrix, "payer-a", scope="system/Observation.read system/Patient.r")
    assert matrix.test_client().get("/fhir/Patient", headers=headers).status_code == 403
    patients, observations = _entries(matrix, headers, "batch", ["Patient", "Observation"])
    assert _status(patients) == 403  # r without s: read by id, never enumerate
    assert _status(observations) == 200  # v1 read is rs


def test_a_bad_search_parameter_answers_400_naming_the_entry(matrix):
    headers = bearer(matrix)
    urls = ["Patient?_count=1", "Observation?no-such-param=1", "Observation?date=yesterday"]
    ok, unknown, bad_date = _entries(matrix, headers, "batch", urls)
    assert _status(ok) == 200
    for index, entry in ((1, unknown), (2, bad_date)):
        assert _status(entry) == 400, entry
        issues = entry["response"]["outcome"]["issue"]
        assert {tuple(i["expression"]) for i in issues} == {(f"Bundle.entry[{index}].request.url",)}
    assert "no-such-param" in unknown["response"]["outcome"]["issue"][0]["diagnostics"]
    resp = post_bundle(matrix, headers, "transaction", [get_entry(urls[2])])
    assert resp.status_code == 400
    assert resp.get_json()["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]


def test_a_batch_search_names_the_disclosed_patients_in_the_audit_trail(matrix):
    mine = entitled("payer-b")
    others = {p for who in PAYERS if who != "payer-b" for p in entitled(who)} - mine
    resp = post_bundle(matrix, payer(matrix, "payer-b"), "batch", [get_entry("Condition")])
    assert resp.status_code == 200
    for patient in mine:
        events = [
            e
            for e in audit_events(matrix, patient)
            if any(c.get("code") == "transaction" for c in e.get("subtype", []))
        ]
        assert len(events) == 1, patient
    for patient in others:  # nobody else's records went out, so no batch event names them
        assert not [
            e
            for e in audit_events(matrix, patient)
            if any(c.get("code") == "transaction" for c in e.get("subtype", []))
        ], patient


def test_a_transaction_search_sees_the_transaction_s_own_writes(matrix):
    new = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": "TX-SEARCH-1"}],
        "name": [{"family": "Ode", "given": ["Ida"]}],
    }
    search = "Patient?identifier=urn:oid:2.16.840.1.113883.4.3.25|TX-SEARCH-1"
    resp = post_bundle(
        matrix,
        bearer(matrix),
        "transaction",
        [get_entry(search), {"resource": new, "request": {"method": "POST", "url": "Patient"}}],
    )
    assert resp.status_code == 200, resp.get_json()
    found, created = resp.get_json()["entry"]
    assert _status(created) == 201
    assert _ids(found["resource"]) == [created["response"]["location"].split("/_history")[0]]


def test_a_search_entry_on_a_type_the_bridge_does_not_serve_answers_404_as_directly(matrix):
    headers = bearer(matrix)
    assert matrix.test_client().get("/fhir/Encounter?_id=1", headers=headers).status_code == 404
    (entry,) = _entries(matrix, headers, "batch", ["Encounter?_id=1"])
    assert _status(entry) == 404
    assert entry["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].request.url"]
