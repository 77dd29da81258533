"""What FHIR client libraries and a differential test against another server found missing:
instance history with _since/_count, bare ids on multi-type references, Patient gender, the
``ap`` date prefix, ``_summary=true`` and ``Bundle.total`` on request."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from tests.factories import organization, patient, practitioner, service_request, store_all

SUBSETTED = "SUBSETTED"


def get(client, url: str, status: int = 200) -> dict:
    resp = client.get(url)
    assert resp.status_code == status, resp.get_data(as_text=True)[:800]
    return resp.get_json()


def relative(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e]


def next_link(bundle: dict) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


# --- instance history --------------------------------------------------------------------------


@pytest.fixture
def three_versions(runtime):
    """Patient pat-h with versions 1, 2, 3; returns the instant between versions 1 and 2."""
    base = patient("pat-h", "P-9", "Hist", "Ory")
    store_all(runtime, [base])
    time.sleep(0.01)
    between = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    time.sleep(0.01)
    store_all(runtime, [{**base, "gender": "other"}])
    store_all(runtime, [{**base, "gender": "unknown"}])
    return between


def test_history_count_pages_with_a_next_link(client, three_versions):
    page = get(client, "/fhir/Patient/pat-h/_history?_count=1")
    assert page["total"] == 3
    versions = [e["resource"]["meta"]["versionId"] for e in page["entry"]]
    assert versions == ["3"]
    seen = list(versions)
    while (link := next_link(page)) is not None:
        assert "_count=1" in link
        page = get(client, relative(link))
        seen += [e["resource"]["meta"]["versionId"] for e in page["entry"]]
    assert seen == ["3", "2", "1"]


def test_history_since_keeps_the_later_versions(client, three_versions):
    page = get(client, f"/fhir/Patient/pat-h/_history?_since={three_versions}")
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["3", "2"]
    assert page["total"] == 2
    future = get(client, "/fhir/Patient/pat-h/_history?_since=2999-01-01T00:00:00Z")
    assert future["total"] == 0
    assert "entry" not in future
    # a resource that does not exist is still a 404
    get(client, "/fhir/Patient/nobody/_history?_since=2000-01-01T00:00:00Z", 404)


def test_history_since_and_count_together(client, three_versions):
    page = get(client, f"/fhir/Patient/pat-h/_history?_since={three_versions}&_count=1")
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["3"]
    last = get(client, relative(next_link(page)))
    assert [e["resource"]["meta"]["versionId"] for e in last["entry"]] == ["2"]
    assert next_link(last) is None


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("_since=yesterday", "_since"),
        ("_count=0", "_count"),
        ("_count=abc", "_count"),
        ("_at=2026", "_at"),
        ("_cursor=%%%", "_cursor"),
    ],
)
def test_bad_history_parameters_are_a_400_naming_them(client, three_versions, query, expression):
    outcome = get(client, f"/fhir/Patient/pat-h/_history?{query}", 400)
    assert outcome["issue"][0]["expression"] == [expression]


# --- bare ids on references with several target types ------------------------------------------


@pytest.fixture
def referrals(runtime):
    store_all(
        runtime,
        [
            patient("pat-1", "P-1", "Rivera", "Ana"),
            practitioner("dr-1", "1407071236", "Natarajan", "Priya"),
            organization("org-1", "Northside"),
            service_request("sr-by-dr", "pat-1", "dr-1", placer="SR-1"),
            {
                **service_request("sr-by-org", "pat-1", "dr-1", placer="SR-2"),
                "requester": {"reference": "Organization/org-1"},
            },
            {  # a dangling reference to an Organization with the practitioner's id
                **service_request("sr-dangling", "pat-1", "dr-1", placer="SR-3"),
                "requester": {"reference": "Organization/dr-1"},
            },
        ],
    )


def test_a_bare_id_resolves_to_the_only_type_holding_it(client, referrals):
    assert ids(get(client, "/fhir/ServiceRequest?requester=dr-1")) == ["sr-by-dr"]
    assert ids(get(client, "/fhir/ServiceRequest?requester=org-1")) == ["sr-by-org"]
    assert set(ids(get(client, "/fhir/ServiceRequest?subject=pat-1"))) == {
        "sr-by-dr",
        "sr-by-org",
        "sr-dangling",
    }


def test_a_bare_id_held_by_two_types_is_a_400_naming_the_parameter(client, runtime, referrals):
    store_all(runtime, [organization("dr-1", "An organization with a practitioner's id")])
    outcome = get(client, "/fhir/ServiceRequest?requester=dr-1", 400)
    issue = outcome["issue"][0]
    assert issue["expression"] == ["requester"]
    assert "Organization" in issue["diagnostics"]
    assert "Practitioner" in issue["diagnostics"]
    # a type settles it
    assert ids(get(client, "/fhir/ServiceRequest?requester=Practitioner/dr-1")) == ["sr-by-dr"]
    assert ids(get(client, "/fhir/ServiceRequest?requester:Organization=dr-1")) == ["sr-dangling"]


def test_a_bare_id_no_type_holds_finds_what_refers_to_that_id(client, referrals):
    assert ids(get(client, "/fhir/ServiceRequest?requester=nobody")) == []


# --- Patient gender, the ap prefix -------------------------------------------------------------


@pytest.fixture
def people(runtime):
    store_all(
        runtime,
        [
            patient("pat-f", "P-1", "Rivera", "Ana", birth="1980-05-05"),
            {**patient("pat-m", "P-2", "Rivera", "Luis", birth="2020-01-10"), "gender": "male"},
        ],
    )


def test_patient_gender_alone_and_with_name(client, people):
    assert ids(get(client, "/fhir/Patient?gender=female")) == ["pat-f"]
    assert ids(get(client, "/fhir/Patient?name=rivera&gender=male")) == ["pat-m"]
    assert set(ids(get(client, "/fhir/Patient?gender=male,female"))) == {"pat-f", "pat-m"}
    assert ids(get(client, "/fhir/Patient?gender=other")) == []


def test_reindex_gives_patients_stored_before_the_gender_parameter_their_rows(
    client, runtime, people, database_url
):
    from click.testing import CliRunner
    from sqlalchemy import delete

    from fhir_bridge.cli import main
    from fhir_bridge.store.db import write_session
    from fhir_bridge.store.models import SearchToken

    with write_session(runtime.sessions) as session:  # as stored by the previous release
        session.execute(delete(SearchToken).where(SearchToken.param == "gender"))
    assert ids(get(client, "/fhir/Patient?gender=female")) == []
    env = {"FHIR_BRIDGE_DATABASE_URL": database_url, "FHIR_BRIDGE_LOG_JSON": "false"}
    result = CliRunner().invoke(main, ["db", "reindex", "Patient"], env=env)
    assert result.exit_code == 0, result.output
    assert "2 versions reindexed (Patient)" in result.output
    assert ids(get(client, "/fhir/Patient?gender=female")) == ["pat-f"]
    assert ids(get(client, "/fhir/Patient?name=rivera&birthdate=1980-05-05")) == ["pat-f"]
    bad = CliRunner().invoke(main, ["db", "reindex", "Nonsense"], env=env)
    assert bad.exit_code != 0
    assert "not searchable: Nonsense" in bad.output


def test_ap_finds_dates_within_a_tenth_of_their_distance_from_now(client, people):
    # 1980 is ~46 years ago: ap1982 reaches ~4.6 years either side; 2020 is ~7 years ago
    assert ids(get(client, "/fhir/Patient?birthdate=ap1982-01-01")) == ["pat-f"]
    assert ids(get(client, "/fhir/Patient?birthdate=ap1990-01-01")) == []
    assert ids(get(client, "/fhir/Patient?birthdate=ap2020-03-01")) == ["pat-m"]
    assert ids(get(client, "/fhir/Patient?birthdate=ap2022-06-01")) == []
    today = datetime.now(UTC).date().isoformat()
    assert len(ids(get(client, f"/fhir/Patient?_lastUpdated=ap{today}"))) == 2


# --- _summary=true and _total ------------------------------------------------------------------


def test_summary_true_keeps_summary_elements_and_marks_them_subsetted(client, runtime):
    full = {
        **patient("pat-s", "P-3", "Summ", "Ary"),
        "contact": [{"name": {"family": "Kin"}}],
        "communication": [{"language": {"text": "Spanish"}}],
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
    }
    store_all(runtime, [full])
    (entry,) = get(client, "/fhir/Patient?_summary=true")["entry"]
    resource = entry["resource"]
    assert {"name", "gender", "birthDate", "identifier"} <= set(resource)
    assert not {"contact", "communication", "text"} & set(resource)
    assert SUBSETTED in [t["code"] for t in resource["meta"]["tag"]]
    # and the full resource is still there without it
    (plain,) = get(client, "/fhir/Patient")["entry"]
    assert "contact" in plain["resource"]
    assert SUBSETTED not in [t.get("code") for t in plain["resource"]["meta"].get("tag", [])]


def test_total_accurate_is_on_every_page_and_none_omits_it(client, runtime):
    store_all(runtime, [patient(f"pat-{i}", f"P-{i}", "Tot", "Al") for i in range(5)])
    page = get(client, "/fhir/Patient?_total=accurate&_count=2")
    assert page["total"] == 5
    page2 = get(client, relative(next_link(page)))
    assert page2["total"] == 5
    assert len(page2["entry"]) == 2
    assert "total" not in get(client, "/fhir/Patient?_total=none&_count=2")
    assert get(client, "/fhir/Patient?family=tot&_total=accurate&_count=0")["total"] == 5


def test_the_capability_statement_says_what_is_supported(client):
    rest = get(client, "/fhir/metadata")["rest"][0]
    patient_entry = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert "gender" in [p["name"] for p in patient_entry["searchParam"]]
    history = next(i for i in patient_entry["interaction"] if i["code"] == "history-instance")
    assert "_since" in history["documentation"]
    assert "_count" in history["documentation"]
    docs = rest["documentation"]
    for fragment in ("_summary=true", "_total=accurate", "ap", "Type/id"):
        assert fragment in docs
    last_updated = next(p for p in patient_entry["searchParam"] if p["name"] == "_lastUpdated")
    assert " ap" in last_updated["documentation"]
