"""Pull mode's pure helpers and its paging client (``responses``): the query, the pages, the
cursor, what counts as addressed to the clinic, and every way a page can fail."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses

from fhir_bridge.exchange.auth import BearerAuth, NoAuth
from fhir_bridge.exchange.fhir_search import SearchFailed, search_pages
from fhir_bridge.fhir import poll_search as plan

BASE = "https://ehr.example.org/fhir"
NPI = "http://hl7.org/fhir/sid/us-npi"
CLINIC = "1245319599"


def bundle(*entries: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": list(entries)}
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return body


def sr(sid: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": sid, "meta": {"lastUpdated": at}, **extra}


def match(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "search": {"mode": "match"}}


# -- pure helpers -------------------------------------------------------------------------------


def test_the_first_query_asks_for_the_clinics_referrals_since_the_cursor_oldest_first():
    since = plan.instant_micros("2026-11-10T09:05:00.250999Z")
    params = plan.search_params("ServiceRequest", CLINIC, since, 50)
    assert params[:4] == [
        ("performer:identifier", f"{NPI}|{CLINIC}"),
        ("_lastUpdated", "ge2026-11-10T09:05:00.250Z"),  # floored: the boundary overlaps
        ("_sort", "_lastUpdated"),
        ("_count", "50"),
    ]
    task = dict(plan.search_params("Task", CLINIC, None, 10))
    assert task["owner:identifier"] == f"{NPI}|{CLINIC}"
    assert task["code"] == "http://hl7.org/fhir/CodeSystem/task-code|fulfill"
    assert "_lastUpdated" not in task  # the first poll takes everything addressed to us


def test_the_cursor_is_the_highest_last_updated_in_utc_and_never_goes_back():
    page = [sr("a", "2026-11-10T10:00:00+02:00"), sr("b", "2026-11-10T09:00:00Z"), sr("c", "x")]
    assert plan.high_water(page, None) == plan.instant_micros("2026-11-10T09:00:00Z")
    later = plan.instant_micros("2026-12-01T00:00:00Z")
    assert plan.high_water(page, later) == later
    assert plan.high_water([sr("c", "bad")], None) is None


def test_cursor_names_fit_the_column_whatever_the_key():
    assert plan.cursor_name("northside", "Task") == "poll:northside:Task"
    long_key = "n" * 64
    names = {plan.cursor_name(long_key, t) for t in ("Task", "ServiceRequest")}
    assert len(names) == 2
    assert all(len(n) <= 64 for n in names)


def test_relative_references_become_the_partners_and_the_rest_stay():
    resource = {
        "resourceType": "ServiceRequest",
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "#dr"},
        "performer": [{"reference": "https://other.example.org/fhir/Organization/o"}],
        "contained": [{"resourceType": "Practitioner", "id": "dr"}],
    }
    out = plan.absolutize(resource, BASE)
    assert out["subject"] == {"reference": f"{BASE}/Patient/p1"}
    assert out["requester"] == {"reference": "#dr"}
    assert out["performer"][0]["reference"] == "https://other.example.org/fhir/Organization/o"
    assert resource["subject"] == {"reference": "Patient/p1"}  # the original is untouched


def test_a_page_splits_matches_from_includes_and_keys_includes_by_absolute_url():
    org = {
        "resourceType": "Organization",
        "id": "o1",
        "identifier": [{"system": NPI, "value": CLINIC}],
    }
    page = plan.read_page(
        bundle(
            match(sr("s1", "2026-11-10T09:00:00Z", performer=[{"reference": "Organization/o1"}])),
            {"resource": org, "search": {"mode": "include"}},
            {
                "resource": {"resourceType": "OperationOutcome", "id": "w"},
                "search": {"mode": "outcome"},
            },
            next_url=f"{BASE}/ServiceRequest?page=2",
        ),
        "ServiceRequest",
        BASE,
    )
    assert [r["id"] for r in page.matches] == ["s1"]
    assert list(page.included) == [f"{BASE}/Organization/o1"]
    assert page.next_url == f"{BASE}/ServiceRequest?page=2"
    addressed = plan.absolutize(page.matches[0], BASE)
    assert plan.addressed_to_clinic(addressed, page.included, CLINIC)
    assert not plan.addressed_to_clinic(addressed, page.included, "1407071236")
    with pytest.raises(ValueError, match="searchset"):
        plan.read_page({"resourceType": "Bundle", "type": "history"}, "ServiceRequest", BASE)


def test_a_task_is_addressed_by_its_owner_or_its_focus_and_must_focus_a_service_request():
    focus = f"{BASE}/ServiceRequest/s1"
    by_owner = {
        "resourceType": "Task",
        "owner": {"identifier": {"system": NPI, "value": CLINIC}},
        "focus": {"reference": focus},
    }
    assert plan.addressed_to_clinic(by_owner, {}, CLINIC)
    assert plan.focus_url(by_owner) == focus
    by_focus = {"resourceType": "Task", "focus": {"reference": focus}}
    included = {focus: sr("s1", "x", performer=[{"identifier": {"system": NPI, "value": CLINIC}}])}
    assert plan.addressed_to_clinic(by_focus, included, CLINIC)
    assert not plan.addressed_to_clinic(by_focus, {}, CLINIC)
    assert plan.focus_url({"focus": {"reference": f"{BASE}/Patient/p"}}) is None


# -- the paging client --------------------------------------------------------------------------


def pages(auth: Any = None, **kw: Any) -> list[dict[str, Any]]:
    return list(
        search_pages(
            BASE,
            "ServiceRequest",
            [("_count", "1")],
            auth=auth or NoAuth(),
            http=requests.Session(),
            timeout=2,
            **kw,
        )
    )


@responses.activate
def test_next_links_are_followed_on_the_partners_base_with_its_token():
    second = f"{BASE}/ServiceRequest?_getpages=abc&_offset=1"
    responses.get(f"{BASE}/ServiceRequest", json=bundle(next_url=second))
    responses.get(second, json=bundle())
    got = pages(BearerAuth("tok"))
    assert len(got) == 2
    assert [c.request.headers["Authorization"] for c in responses.calls] == ["Bearer tok"] * 2
    assert responses.calls[0].request.url == f"{BASE}/ServiceRequest?_count=1"


@responses.activate
def test_a_next_link_to_another_host_is_never_followed():
    responses.get(f"{BASE}/ServiceRequest", json=bundle(next_url="https://evil.example/fhir/x"))
    with pytest.raises(SearchFailed, match="leaves its FHIR base"):
        pages(BearerAuth("tok"))
    assert len(responses.calls) == 1


@pytest.mark.parametrize(
    ("reply", "status", "transient"),
    [
        ({"status": 503}, 503, True),
        ({"status": 429}, 429, True),
        ({"status": 400}, 400, False),
        ({"body": requests.ConnectionError("refused")}, None, True),
        ({"body": requests.Timeout("slow")}, None, True),
        ({"body": b"<html>"}, 502, True),
    ],
)
@responses.activate
def test_failures_say_whether_to_try_again_and_never_quote_the_url(reply, status, transient):
    responses.get(f"{BASE}/ServiceRequest", **reply)
    with pytest.raises(SearchFailed) as caught:
        pages()
    assert caught.value.status == status
    assert caught.value.transient is transient
    assert "ehr.example.org" not in str(caught.value)


class RefreshingAuth:
    """A token that a 401 renews once."""

    def __init__(self) -> None:
        self.token = "old"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def refresh(self) -> bool:
        self.token = "new"
        return True


@responses.activate
def test_a_401_refreshes_the_token_once_and_retries():
    responses.get(f"{BASE}/ServiceRequest", status=401)
    responses.get(f"{BASE}/ServiceRequest", json=bundle())
    assert len(pages(RefreshingAuth())) == 1
    assert [c.request.headers["Authorization"] for c in responses.calls] == [
        "Bearer old",
        "Bearer new",
    ]


@responses.activate
def test_a_second_401_is_final():
    responses.get(f"{BASE}/ServiceRequest", status=401)
    with pytest.raises(SearchFailed) as caught:
        pages(RefreshingAuth())
    assert caught.value.status == 401
    assert len(responses.calls) == 2


# -- the worker's schedule ----------------------------------------------------------------------


def test_the_worker_polls_at_most_every_n_seconds_and_survives_a_failing_cycle():
    from fhir_bridge.services.referral_poll import PollSchedule

    now = [100.0]
    calls: list[float] = []

    def poll() -> None:
        calls.append(now[0])
        if len(calls) == 2:
            raise RuntimeError("database down")

    schedule = PollSchedule(poll, 60, clock=lambda: now[0])
    ran = []
    for t in (100.0, 130.0, 159.9, 160.0, 200.0, 221.0):
        now[0] = t
        ran.append(schedule.run_if_due())
    assert ran == [True, False, False, True, False, True]
    assert calls == [100.0, 160.0, 221.0]  # the failure at 160 did not stop the next one
