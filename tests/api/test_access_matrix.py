"""Member-scoped access: 3 payers, 2 EHRs, 20 patients with overlapping coverage periods.

For every client and every read path the answer is exactly the entitled set: a payer sees a
patient while an active Coverage names it as payor for today; an EHR sees the patients it
referred (as Organization, PractitionerRole or Practitioner of that Organization). Everything
else answers as if it did not exist.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from fhir_bridge.store.db import write_session
from fhir_bridge.store.repository import ResourceStore
from tests.support.tokens import bearer

PAYERS = ("payer-a", "payer-b", "payer-c")
EHRS = ("ehr-north", "ehr-lake")
PATIENTS = [f"p{i:02d}" for i in range(20)]
TODAY = date.today()


def _d(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


def coverages() -> list[dict]:
    """Overlapping periods: current, expired, future, open-ended, cancelled, two at once."""
    out = []
    for i, pid in enumerate(PATIENTS):
        payer = PAYERS[i % 3]
        kind = i % 5
        period = {
            0: {"start": _d(-100), "end": _d(100)},  # current
            1: {"start": _d(-400), "end": _d(-10)},  # expired
            2: {"start": _d(10), "end": _d(300)},  # not yet
            3: {"start": _d(-30)},  # open-ended, current
            4: {"start": _d(-100), "end": _d(100)},  # current but cancelled
        }[kind]
        out.append(
            _coverage(f"cov-{pid}", pid, payer, period, "cancelled" if kind == 4 else "active")
        )
        if i % 4 == 0:  # a second, overlapping coverage with the next payer
            out.append(
                _coverage(f"cov2-{pid}", pid, PAYERS[(i + 1) % 3], {"start": _d(-5)}, "active")
            )
    return out


def _coverage(cid: str, pid: str, payer: str, period: dict | None, status: str) -> dict:
    body = {
        "resourceType": "Coverage",
        "id": cid,
        "status": status,
        "beneficiary": {"reference": f"Patient/{pid}"},
        "payor": [{"reference": f"Organization/{payer}"}],
    }
    if period is not None:
        body["period"] = period
    return body


def requester_of(i: int) -> dict | None:
    """Who referred patient i: north and lake each in one of three reference styles."""
    if i % 7 == 6:
        return None  # nobody: only payers may see this patient
    org = EHRS[i % 2]
    style = i % 3
    if style == 0:
        return {"reference": f"Organization/{org}"}
    if style == 1:
        return {"reference": f"PractitionerRole/role-{org}"}
    return {"reference": f"Practitioner/prac-{org}"}


def entitled(client: str) -> set[str]:
    """The patients ``client`` may see, computed from the data's definition, not the store."""
    if client in PAYERS:
        seen = set()
        for cov in coverages():
            p = cov.get("period", {"start": "0001-01-01"})
            active_today = p["start"] <= TODAY.isoformat() and (
                "end" not in p or p["end"] >= TODAY.isoformat()
            )
            if (
                cov["status"] == "active"
                and active_today
                and cov["payor"][0]["reference"].endswith(client)
            ):
                seen.add(cov["beneficiary"]["reference"].split("/")[1])
        return seen
    return {pid for i, pid in enumerate(PATIENTS) if requester_of(i) and EHRS[i % 2] == client}


def dataset() -> list[dict]:
    res: list[dict] = []
    for org in PAYERS + EHRS:
        res.append({"resourceType": "Organization", "id": org, "name": org})
    for org in EHRS:
        res.append({"resourceType": "Practitioner", "id": f"prac-{org}"})
        res.append(
            {
                "resourceType": "PractitionerRole",
                "id": f"role-{org}",
                "practitioner": {"reference": f"Practitioner/prac-{org}"},
                "organization": {"reference": f"Organization/{org}"},
            }
        )
    for i, pid in enumerate(PATIENTS):
        subject = {"reference": f"Patient/{pid}"}
        res.append({"resourceType": "Patient", "id": pid})
        res.append(
            {
                "resourceType": "Procedure",
                "id": f"proc-{pid}",
                "status": "completed",
                "subject": subject,
                "code": {"text": "massage"},
            }
        )
        for n in range(2):
            res.append(
                {
                    "resourceType": "Observation",
                    "id": f"obs-{pid}-{n}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
                    "subject": subject,
                    "partOf": [{"reference": f"Procedure/proc-{pid}"}],
                    "effectiveDateTime": _d(-n),
                }
            )
        res.append(
            {
                "resourceType": "Condition",
                "id": f"cond-{pid}",
                "subject": subject,
                "code": {"text": "neck pain"},
            }
        )
        res.append(
            {
                "resourceType": "Goal",
                "id": f"goal-{pid}",
                "lifecycleStatus": "active",
                "description": {"text": "less pain"},
                "subject": subject,
            }
        )
        req = requester_of(i)
        if req:
            res.append(
                {
                    "resourceType": "ServiceRequest",
                    "id": f"sr-{pid}",
                    "status": "active",
                    "intent": "order",
                    "subject": subject,
                    "requester": req,
                    "code": {"text": "medical massage"},
                }
            )
    return res + coverages()


@pytest.fixture
def matrix(runtime, app):
    with write_session(runtime.sessions) as session:
        ResourceStore(session).bulk_create(dataset())
    return app


def headers_for(app, client: str) -> dict[str, str]:
    role = "payer" if client in PAYERS else "ehr"
    return bearer(app, role=role, organization=f"Organization/{client}", scope="system/*.rs")


def all_pages(client, url: str, headers: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Follow next links; returns (matches, included)."""
    matches, included = [], []
    while url:
        resp = client.get(url, headers=headers)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        for e in body.get("entry", []):
            (matches if e["search"]["mode"] == "match" else included).append(e["resource"])
        url = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
        url = url.removeprefix("http://bridge.test") if url else None
    return matches, included


def patient_of(resource: dict) -> str:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    ref = resource.get("subject") or resource.get("beneficiary")
    return ref["reference"].split("/")[1]


CLIENTS = PAYERS + EHRS


def test_the_matrix_is_not_trivial():
    sizes = {c: len(entitled(c)) for c in CLIENTS}
    assert all(0 < n < len(PATIENTS) for n in sizes.values()), sizes
    together = set().union(*(entitled(c) for c in PAYERS))
    assert together != set(PATIENTS)  # some patients have no payer today
    assert any(entitled(a) & entitled(b) for a in PAYERS for b in PAYERS if a != b)


@pytest.mark.parametrize("who", CLIENTS)
def test_searches_and_paging_return_exactly_the_entitled_patients(matrix, who):
    client, headers, mine = matrix.test_client(), headers_for(matrix, who), entitled(who)
    patients, _ = all_pages(client, "/fhir/Patient?_count=3", headers)
    assert {p["id"] for p in patients} == mine
    for rtype, per_patient in (("Observation", 2), ("Procedure", 1), ("Condition", 1), ("Goal", 1)):
        found, _ = all_pages(client, f"/fhir/{rtype}?_count=4", headers)
        assert {patient_of(r) for r in found} == mine, rtype
        assert len(found) == per_patient * len(mine), rtype
    covs, _ = all_pages(client, "/fhir/Coverage", headers)
    assert {patient_of(c) for c in covs} == mine
    total = client.get("/fhir/Observation?_summary=count", headers=headers).get_json()["total"]
    assert total == 2 * len(mine)
    # directory resources are for everyone
    orgs, _ = all_pages(client, "/fhir/Organization", headers)
    assert len(orgs) == len(PAYERS + EHRS)


@pytest.mark.parametrize("who", CLIENTS)
def test_read_vread_history_answer_404_outside_the_scope(matrix, who):
    client, headers, mine = matrix.test_client(), headers_for(matrix, who), entitled(who)
    for pid in PATIENTS:
        expected = 200 if pid in mine else 404
        for url in (
            f"/fhir/Patient/{pid}",
            f"/fhir/Patient/{pid}/_history/1",
            f"/fhir/Patient/{pid}/_history",
            f"/fhir/Observation/obs-{pid}-0",
            f"/fhir/Observation/obs-{pid}-1/_history/1",
            f"/fhir/Procedure/proc-{pid}/_history",
        ):
            resp = client.get(url, headers=headers)
            assert resp.status_code == expected, (url, resp.status_code)
            if expected == 404:
                assert resp.get_json()["issue"][0]["code"] == "not-found"
        patient_search = f"/fhir/Observation?patient=Patient/{pid}"
        found, _ = all_pages(client, patient_search, headers)
        assert len(found) == (2 if pid in mine else 0)


@pytest.mark.parametrize("who", CLIENTS)
def test_includes_and_revincludes_never_reach_past_the_scope(matrix, who):
    client, headers, mine = matrix.test_client(), headers_for(matrix, who), entitled(who)
    # _include from a search the scope already narrows
    obs, pats = all_pages(
        client, "/fhir/Observation?_include=Observation:patient&_count=5", headers
    )
    assert {p["id"] for p in pats} <= mine
    assert {p["id"] for p in pats} == {patient_of(o) for o in obs}
    # _revinclude: only the members' Observations come along
    pats, obs = all_pages(client, "/fhir/Patient?_revinclude=Observation:patient", headers)
    assert {patient_of(o) for o in obs} == mine
    assert len(obs) == 2 * len(mine)
    _procs, parts = all_pages(
        client, "/fhir/Procedure?_revinclude=Observation:part-of&_count=2", headers
    )
    assert {patient_of(o) for o in parts} == mine
    # a directory search may include patients only of the caller's own members
    roles, _ = all_pages(client, "/fhir/ServiceRequest?_include=ServiceRequest:patient", headers)
    assert {patient_of(r) for r in roles} <= mine


def test_clinic_and_admin_see_everyone(matrix):
    client = matrix.test_client()
    for role in ("clinic", "admin"):
        found, _ = all_pages(client, "/fhir/Patient", bearer(matrix, role=role))
        assert len(found) == len(PATIENTS)


def test_a_payer_token_without_an_organization_sees_no_patient(matrix):
    client = matrix.test_client()
    headers = bearer(matrix, role="payer", organization=None, scope="system/*.rs")
    found, _ = all_pages(client, "/fhir/Patient", headers)
    assert found == []


@pytest.mark.parametrize("who", CLIENTS)
def test_everything_documentation_and_cdex_answers_follow_the_scope(matrix, who):
    client, mine = matrix.test_client(), entitled(who)
    role = "payer" if who in PAYERS else "ehr"
    headers = bearer(
        matrix, role=role, organization=f"Organization/{who}", scope="system/*.rs system/Task.c"
    )
    for i, pid in enumerate(PATIENTS):
        everything = client.get(f"/fhir/Patient/{pid}/$everything?_count=4", headers=headers)
        if pid not in mine:
            assert everything.status_code == 404, pid
        else:
            found, _ = all_pages(client, f"/fhir/Patient/{pid}/$everything?_count=4", headers)
            assert {patient_of(r) for r in found if r["resourceType"] != "Coverage"} == {pid}
        if requester_of(i):
            doc = client.get(f"/fhir/ServiceRequest/sr-{pid}/$documentation", headers=headers)
            assert doc.status_code == (200 if pid in mine else 404), pid
        task = client.post(
            "/fhir/Task",
            json={
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp",
                            "code": "data-request-query",
                        }
                    ]
                },
                "for": {"reference": f"Patient/{pid}"},
                "input": [
                    {
                        "type": {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp",
                                    "code": "data-query",
                                }
                            ]
                        },
                        "valueString": "Observation",
                    }
                ],
            },
            headers=headers,
        ).get_json()
        if pid in mine:
            assert task["status"] == "completed", pid
            [bundle] = task["contained"]
            assert {patient_of(e["resource"]) for e in bundle["entry"]} == {pid}
        else:
            assert task["status"] == "rejected", pid
            assert "contained" not in task
