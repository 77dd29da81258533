"""Search over HTTP: every supported parameter, modifier and prefix, result parameters, errors."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.factories import (
    LOINC,
    MRN,
    NPI,
    condition,
    coverage,
    observation,
    organization,
    patient,
    practitioner,
    procedure,
    service_request,
    store_all,
    task,
)


@pytest.fixture
def clinic(runtime):
    """Two patients with referrals, visits, measurements, coverage and diagnoses."""
    ana = patient("ana", "P-1001", "Rivera", "Ana", "1979-03-14")
    ana["name"][0]["given"].append("Lucía")
    chidi = patient("chidi", "P-1002", "Okafor", "Chidi", "1988-07-02")
    resources = [
        ana,
        chidi,
        practitioner("drn", "1407071236", "Natarajan", "Priya"),
        practitioner("lmt", "1234567893", "Lee", "Sam"),
        organization("clinic", "Example Medical Massage Clinic", "1245319599"),
        organization("acme", "Acme Health Plan"),
        coverage("cov-ana", "ana", "acme", "XQZ123456789"),
        condition("cond-ana", "ana", "M54.2"),
        condition("cond-chidi", "chidi", "M54.50"),
        service_request(
            "sr-ana", "ana", "drn", placer="SR-8891", code="97124", authored="2026-11-02"
        ),
        service_request(
            "sr-chidi",
            "chidi",
            "drn",
            placer="SR-9000",
            code="97140",
            status="completed",
            authored="2026-09-15",
        ),
        task(
            "task-ana",
            "ServiceRequest/sr-ana",
            "ana",
            "Organization/clinic",
            "Practitioner/drn",
            status="accepted",
        ),
        procedure(
            "proc-1",
            "ana",
            start="2026-11-13T10:00:00-05:00",
            end="2026-11-13T10:55:00-05:00",
            based_on="ServiceRequest/sr-ana",
            identifier="MMC-1",
        ),
        procedure(
            "proc-2",
            "ana",
            start="2026-11-20T10:00:00-05:00",
            end="2026-11-20T10:55:00-05:00",
            based_on="ServiceRequest/sr-ana",
            identifier="MMC-2",
        ),
        procedure(
            "proc-3",
            "chidi",
            code="97140",
            start="2026-09-20T09:00:00-04:00",
            end="2026-09-20T09:45:00-04:00",
            based_on="ServiceRequest/sr-chidi",
            status="in-progress",
        ),
        observation(
            "obs-1",
            "ana",
            value=7,
            effective="2026-11-13T10:02:00-05:00",
            part_of="Procedure/proc-1",
            based_on="ServiceRequest/sr-ana",
        ),
        observation(
            "obs-2",
            "ana",
            value=4,
            effective="2026-11-13T10:52:00-05:00",
            part_of="Procedure/proc-1",
            based_on="ServiceRequest/sr-ana",
        ),
        observation(
            "obs-3",
            "ana",
            value=5,
            effective="2026-11-20T10:02:00-05:00",
            part_of="Procedure/proc-2",
            based_on="ServiceRequest/sr-ana",
        ),
        observation(
            "obs-4",
            "chidi",
            code="77860-5",
            value=61,
            effective="2026-09-20T09:00:00-04:00",
            status="preliminary",
            category="exam",
        ),
    ]
    store_all(runtime, resources)


def ids(client, url: str, **headers: str) -> list[str]:
    resp = client.get(url, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "searchset"
    return [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


CASES = [
    # Patient
    ("Patient?_id=ana", {"ana"}),
    ("Patient?_id=ana,chidi", {"ana", "chidi"}),
    (f"Patient?identifier={quote(MRN)}|P-1001", {"ana"}),
    ("Patient?identifier=P-1002", {"chidi"}),
    ("Patient?identifier=https://other.example.org|P-1001", set()),
    ("Patient?name=riv", {"ana"}),
    ("Patient?name=LUCIA", {"ana"}),
    ("Patient?name:exact=Rivera", {"ana"}),
    ("Patient?name:exact=rivera", set()),
    ("Patient?name:contains=kaf", {"chidi"}),
    ("Patient?family=okafor", {"chidi"}),
    ("Patient?birthdate=1979-03-14", {"ana"}),
    ("Patient?birthdate=1979", {"ana"}),
    ("Patient?birthdate=lt1980-01-01", {"ana"}),
    ("Patient?birthdate=gt1980-01-01", {"chidi"}),
    ("Patient?birthdate=ge1988-07-02", {"chidi"}),
    ("Patient?birthdate=le1988-07-02", {"ana", "chidi"}),
    ("Patient?birthdate=ne1979-03-14", {"chidi"}),
    ("Patient?birthdate=sa1980-01-01", {"chidi"}),
    ("Patient?birthdate=eb1980-01-01", {"ana"}),
    ("Patient?name=rivera&birthdate=1988", set()),
    # Practitioner, Organization
    (f"Practitioner?identifier={quote(NPI)}|1407071236", {"drn"}),
    ("Practitioner?name=lee", {"lmt"}),
    ("Organization?name=acme", {"acme"}),
    ("Organization?identifier=1245319599", {"clinic"}),
    # ServiceRequest
    ("ServiceRequest?_id=sr-chidi", {"sr-chidi"}),
    ("ServiceRequest?patient=Patient/ana", {"sr-ana"}),
    ("ServiceRequest?patient=ana", {"sr-ana"}),
    ("ServiceRequest?status=active", {"sr-ana"}),
    ("ServiceRequest?status:not=active", {"sr-chidi"}),
    ("ServiceRequest?identifier=SR-9000", {"sr-chidi"}),
    ("ServiceRequest?requester=Practitioner/drn", {"sr-ana", "sr-chidi"}),
    ("ServiceRequest?requester:Practitioner=drn", {"sr-ana", "sr-chidi"}),
    ("ServiceRequest?authored=ge2026-10-01", {"sr-ana"}),
    ("ServiceRequest?authored=lt2026-10-01", {"sr-chidi"}),
    ("ServiceRequest?code=http://www.ama-assn.org/go/cpt|97140", {"sr-chidi"}),
    ("ServiceRequest?code=97124,97140", {"sr-ana", "sr-chidi"}),
    # Procedure
    ("Procedure?patient=Patient/ana", {"proc-1", "proc-2"}),
    ("Procedure?subject=Patient/chidi", {"proc-3"}),
    ("Procedure?date=2026-11-13", {"proc-1"}),
    ("Procedure?date=ge2026-11-14", {"proc-2"}),
    ("Procedure?date=gt2026-11-13T15:30:00Z", {"proc-1", "proc-2"}),  # overlap counts
    ("Procedure?date=gt2026-11-13T16:00:00Z", {"proc-2"}),
    ("Procedure?date=lt2026-10-01", {"proc-3"}),
    ("Procedure?code=97140", {"proc-3"}),
    ("Procedure?based-on=ServiceRequest/sr-ana", {"proc-1", "proc-2"}),
    ("Procedure?identifier=https://clinic.example.org/fhir/session|MMC-2", {"proc-2"}),
    ("Procedure?status=in-progress", {"proc-3"}),
    # Observation
    ("Observation?patient=Patient/ana", {"obs-1", "obs-2", "obs-3"}),
    ("Observation?subject=Patient/chidi", {"obs-4"}),
    ("Observation?category=survey", {"obs-1", "obs-2", "obs-3"}),
    (
        "Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|exam",
        {"obs-4"},
    ),
    (f"Observation?code={quote(LOINC)}|72514-3&patient=Patient/ana", {"obs-1", "obs-2", "obs-3"}),
    ("Observation?code=77860-5", {"obs-4"}),
    ("Observation?code:text=pain sev", {"obs-1", "obs-2", "obs-3", "obs-4"}),
    ("Observation?date=2026-11-13", {"obs-1", "obs-2"}),
    ("Observation?date=ge2026-11-13T15:30:00Z&date=le2026-11-20", {"obs-2", "obs-3"}),
    ("Observation?part-of=Procedure/proc-1", {"obs-1", "obs-2"}),
    ("Observation?based-on=ServiceRequest/sr-ana", {"obs-1", "obs-2", "obs-3"}),
    ("Observation?based-on:missing=true", {"obs-4"}),
    ("Observation?part-of:missing=false", {"obs-1", "obs-2", "obs-3"}),
    ("Observation?status=preliminary", {"obs-4"}),
    # Coverage
    ("Coverage?patient=Patient/ana", {"cov-ana"}),
    ("Coverage?beneficiary=Patient/ana", {"cov-ana"}),
    ("Coverage?payor=Organization/acme", {"cov-ana"}),
    ("Coverage?identifier=XQZ123456789", {"cov-ana"}),
    ("Coverage?payor=Organization/clinic", set()),
    # Condition
    ("Condition?patient=Patient/chidi", {"cond-chidi"}),
    ("Condition?code=http://hl7.org/fhir/sid/icd-10-cm|M54.2", {"cond-ana"}),
    ("Condition?category=encounter-diagnosis", {"cond-ana", "cond-chidi"}),
    # Task
    ("Task?owner=Organization/clinic", {"task-ana"}),
    ("Task?requester=Practitioner/drn", {"task-ana"}),
    ("Task?focus=ServiceRequest/sr-ana", {"task-ana"}),
    ("Task?status=accepted", {"task-ana"}),
    ("Task?status=requested", set()),
    ("Task?patient=Patient/ana", {"task-ana"}),
    ("Task?identifier=T-task-ana", {"task-ana"}),
    ("Task?_lastUpdated=ge2020-01-01", {"task-ana"}),
    ("Task?_lastUpdated=lt2020-01-01", set()),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[c[0] for c in CASES])
def test_search_parameters(client, clinic, query, expected):
    assert set(ids(client, f"/fhir/{query}")) == expected


def test_post_search_matches_get(client, clinic):
    resp = client.post(
        "/fhir/Observation/_search",
        data={"patient": "Patient/ana", "code": "72514-3"},
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 200
    assert {e["resource"]["id"] for e in resp.get_json()["entry"]} == {"obs-1", "obs-2", "obs-3"}


def test_include_and_revinclude(client, clinic):
    body = client.get(
        "/fhir/Procedure?patient=Patient/ana&_include=Procedure:based-on&_revinclude=Observation:part-of"
    ).get_json()
    modes = {
        (e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"]
        for e in body["entry"]
    }
    assert modes == {
        ("Procedure", "proc-1"): "match",
        ("Procedure", "proc-2"): "match",
        ("ServiceRequest", "sr-ana"): "include",
        ("Observation", "obs-1"): "include",
        ("Observation", "obs-2"): "include",
        ("Observation", "obs-3"): "include",
    }


def test_include_task_focus_and_requester(client, clinic):
    body = client.get(
        "/fhir/Task?owner=Organization/clinic&_include=Task:focus&_include=Task:requester"
    ).get_json()
    included = {e["resource"]["id"] for e in body["entry"] if e["search"]["mode"] == "include"}
    assert included == {"sr-ana", "drn"}


def test_sort_by_date_both_ways(client, clinic):
    assert ids(client, "/fhir/Observation?patient=Patient/ana&_sort=date") == [
        "obs-1",
        "obs-2",
        "obs-3",
    ]
    assert ids(client, "/fhir/Observation?patient=Patient/ana&_sort=-date") == [
        "obs-3",
        "obs-2",
        "obs-1",
    ]
    assert ids(client, "/fhir/Procedure?_sort=-date") == ["proc-2", "proc-1", "proc-3"]


def test_sort_by_last_updated(client, clinic, runtime):
    store_all(
        runtime, [observation("obs-1", "ana", value=8, effective="2026-11-13T10:02:00-05:00")]
    )
    assert ids(client, "/fhir/Observation?patient=Patient/ana&_sort=-_lastUpdated")[0] == "obs-1"
    assert ids(client, "/fhir/Observation?patient=Patient/ana&_sort=_lastUpdated")[-1] == "obs-1"


def test_summary_count_and_total(client, clinic):
    body = client.get("/fhir/Observation?patient=Patient/ana&_summary=count").get_json()
    assert body["total"] == 3
    assert "entry" not in body
    assert client.get("/fhir/Observation?_total=accurate&_count=1").get_json()["total"] == 4


def test_elements_subsets_resources(client, clinic):
    body = client.get("/fhir/Observation?_id=obs-1&_elements=valueQuantity").get_json()
    resource = body["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "valueQuantity"}
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])


def test_count_limits_page_and_links_page_forward_and_back(client, clinic):
    first = client.get("/fhir/Observation?_count=2&_sort=date").get_json()
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "previous" not in links
    assert [e["resource"]["id"] for e in first["entry"]] == ["obs-4", "obs-1"]
    second = client.get(links["next"].removeprefix("http://bridge.test")).get_json()
    assert [e["resource"]["id"] for e in second["entry"]] == ["obs-2", "obs-3"]
    links2 = {link["relation"]: link["url"] for link in second["link"]}
    assert "next" not in links2
    back = client.get(links2["previous"].removeprefix("http://bridge.test")).get_json()
    assert [e["resource"]["id"] for e in back["entry"]] == ["obs-4", "obs-1"]
    assert links["next"].startswith("http://bridge.test/fhir/Observation?")


@pytest.mark.parametrize(
    ("query", "code", "mentions"),
    [
        ("Observation?patiant=Patient/ana", "not-supported", "patiant"),
        ("Observation?code:fuzzy=1", "not-supported", "fuzzy"),
        ("Observation?date=2026-13-45", "invalid", "date"),
        ("Observation?_count=abc", "invalid", "_count"),
        ("Observation?_sort=value", "not-supported", "value"),
        ("Observation?_include=Observation:code", "invalid", "_include"),
        ("Observation?_summary=text", "not-supported", "_summary"),
        ("Observation?subject.name=Rivera", "not-supported", "subject.name"),
        ("Observation?_cursor=garbage", "invalid", "_cursor"),
    ],
)
def test_bad_search_answers_400_with_the_parameter(client, clinic, query, code, mentions):
    resp = client.get(f"/fhir/{query}")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"] == code
    assert mentions in issue["diagnostics"] + " ".join(issue.get("expression", []))


def test_several_problems_are_reported_at_once(client, clinic):
    body = client.get("/fhir/Observation?patiant=x&date=notadate&_count=-1").get_json()
    assert len(body["issue"]) == 3


def test_lenient_handling_ignores_unknown_parameters_with_a_warning(client, clinic):
    resp = client.get(
        "/fhir/Observation?patiant=x&status=preliminary", headers={"Prefer": "handling=lenient"}
    )
    assert resp.status_code == 200
    body = resp.get_json()
    matches = [e["resource"]["id"] for e in body["entry"] if e["search"]["mode"] == "match"]
    assert matches == ["obs-4"]
    outcome = next(e["resource"] for e in body["entry"] if e["search"]["mode"] == "outcome")
    assert outcome["issue"][0]["severity"] == "warning"
    assert "patiant" in outcome["issue"][0]["diagnostics"]


def test_search_results_validate_as_r4_bundle(client, clinic):
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(
        client.get(
            "/fhir/Observation?_include=Observation:part-of&patiant=x",
            headers={"Prefer": "handling=lenient"},
        ).get_json()
    )


def test_polling_with_last_updated_never_skips_a_write_in_the_same_millisecond(client, runtime):
    from datetime import datetime

    from fhir_bridge.store.db import write_session
    from fhir_bridge.store.repository import ResourceStore

    first_at = datetime(2026, 11, 28, 12, 0, 0, 123100)
    with write_session(runtime.sessions) as session:
        seen = ResourceStore(session, now=lambda: first_at).update(observation("o-seen", "ana"))[0]
    with write_session(runtime.sessions) as session:
        ResourceStore(session, now=lambda: first_at.replace(microsecond=123900)).update(
            observation("o-new", "ana")
        )
    since = quote(seen.resource["meta"]["lastUpdated"])
    assert ids(client, f"/fhir/Observation?_lastUpdated=gt{since}") == ["o-new"]
