"""Property: whatever principal asks whatever read path, it gets exactly the entitled resources.

Principals are drawn from the access matrix's payers and EHRs with narrow or broad SMART
scopes; requests from a grammar of read paths (read, search with includes and revincludes,
batch GET entries, ``$everything``). The oracle is computed from the data's definition
(``entitled``), never from the store.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_access_matrix import (
    CLIENTS,
    PATIENTS,
    PAYERS,
    all_pages,
    dataset,
    entitled,
    matrix,
    patient_of,
)
from tests.support.tokens import bearer

__all__ = ["matrix"]

DIRECTORY = {"Organization", "Practitioner", "PractitionerRole"}
SCOPES = [
    "system/*.rs",
    "system/*.read",
    "system/Observation.rs",
    "system/Patient.rs system/Observation.rs",
    "system/Coverage.read system/Patient.read",
    "system/Procedure.rs system/Goal.rs system/Condition.read",
]
INCLUDES = {
    "Observation": ["Observation:patient", "Observation:part-of"],
    "Procedure": ["Procedure:patient"],
    "ServiceRequest": ["ServiceRequest:patient", "ServiceRequest:requester"],
    "Patient": [],
    "Coverage": ["Coverage:beneficiary", "Coverage:payor"],
}
REVINCLUDES = {"Patient": ["Observation:patient", "Coverage:beneficiary"], "Procedure": []}
RESOURCES = dataset()


def _types(scope: str) -> set[str] | None:
    types = {s.split("/")[1].split(".")[0] for s in scope.split()}
    return None if "*" in types else types


def visible(client: str, scope: str, resource: dict) -> bool:
    """May ``client`` with ``scope`` see ``resource``? From the data's definition."""
    rtype = resource["resourceType"]
    types = _types(scope)
    if types is not None and rtype not in types:
        return False
    if rtype in DIRECTORY:
        return True
    if patient_of(resource) not in entitled(client):
        return False
    if rtype == "Coverage" and client in PAYERS:
        return resource["payor"][0]["reference"] == f"Organization/{client}"
    return True


def _key(resource: dict) -> tuple[str, str]:
    return resource["resourceType"], resource["id"]


requests_ = st.one_of(
    st.tuples(st.just("read"), st.sampled_from(RESOURCES)),
    st.tuples(
        st.just("search"),
        st.sampled_from(sorted(INCLUDES)),
        st.booleans(),
    ),
    st.tuples(st.just("batch"), st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=6)),
    st.tuples(st.just("everything"), st.sampled_from(PATIENTS)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(who=st.sampled_from(CLIENTS), scope=st.sampled_from(SCOPES), request=requests_)
def test_every_read_path_returns_exactly_the_entitled_resources(matrix, who, scope, request):
    role = "payer" if who in PAYERS else "ehr"
    headers = bearer(matrix, role=role, organization=f"Organization/{who}", scope=scope)
    client = matrix.test_client()
    types = _types(scope)
    kind = request[0]
    if kind == "read":
        res = request[1]
        resp = client.get(f"/fhir/{res['resourceType']}/{res['id']}", headers=headers)
        if types is not None and res["resourceType"] not in types:
            assert resp.status_code == 403
        else:
            assert resp.status_code == (200 if visible(who, scope, res) else 404)
    elif kind == "search":
        rtype, with_includes = request[1], request[2]
        params = [("_count", "7")]
        if with_includes:
            params += [("_include", i) for i in INCLUDES[rtype]]
            params += [("_revinclude", i) for i in REVINCLUDES.get(rtype, [])]
        url = f"/fhir/{rtype}?" + "&".join(f"{k}={v}" for k, v in params)
        if types is not None and rtype not in types:
            assert client.get(url, headers=headers).status_code == 403
            return
        matches, included = all_pages(client, url, headers)
        expected = {_key(r) for r in RESOURCES if r["resourceType"] == rtype}
        expected = {k for k in expected if visible(who, scope, _by_key(k))}
        assert {_key(r) for r in matches} == expected
        for res in included:
            assert visible(who, scope, _by_key(_key(res))), _key(res)
    elif kind == "batch":
        entries = [
            {"request": {"method": "GET", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in request[1]
        ]
        body = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        resp = client.post(
            "/fhir", data=json.dumps(body), content_type="application/fhir+json", headers=headers
        )
        assert resp.status_code == 200
        for res, entry in zip(request[1], resp.get_json()["entry"], strict=True):
            status = int(entry["response"]["status"].split()[0])
            assert status == (200 if visible(who, scope, res) else 404), _key(res)
    else:
        pid = request[1]
        url = f"/fhir/Patient/{pid}/$everything?_count=9"
        resp = client.get(url, headers=headers)
        patient = _by_key(("Patient", pid))
        if types is not None and "Patient" not in types:
            assert resp.status_code == 403
            return
        if not visible(who, scope, patient):
            assert resp.status_code == 404
            return
        matches, included = all_pages(client, url, headers)
        expected = {
            _key(r)
            for r in RESOURCES
            if r["resourceType"] not in DIRECTORY
            and patient_of(r) == pid
            and visible(who, scope, r)
        }
        assert {_key(r) for r in matches} == expected
        for res in included:
            assert visible(who, scope, _by_key(_key(res)))


_INDEX = {_key(r): r for r in RESOURCES}


def _by_key(key: tuple[str, str]) -> dict:
    return _INDEX[key]
