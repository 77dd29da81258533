"""A Task whose focus lives on the physician's own FHIR server: fetched, checked, taken in."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from fhir_bridge.app import create_app
from fhir_bridge.services.runtime import build_runtime
from tests.api.test_referrals import referral, task_for
from tests.factories import NPI, patient, store_all
from tests.support.partner_server import PartnerServer, partner_server

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def ehr():
    with partner_server() as server:
        yield server


@pytest.fixture
def bridge(settings, runtime, ehr: PartnerServer):
    """A bridge that has the EHR's server registered (the runtime fixture emptied the DB)."""
    rt = build_runtime(replace(settings, physician_servers=ehr.base, fetch_timeout_seconds=2))
    store_all(rt, [patient("pat-rivera", "P-1001", "Rivera", "Ana")])
    yield create_app(runtime=rt).test_client()
    rt.dispose()


def remote_referral(ehr: PartnerServer, **changes: Any) -> str:
    sr = referral("SR-REMOTE-1", id="sr-remote-1", **changes)
    sr["requester"] = {"identifier": {"system": NPI, "value": "1407071236"}}
    return ehr.put(sr)


def post_task(client, focus: str):
    return client.post("/fhir/Task", data=json.dumps(task_for(focus)), content_type=FHIR_JSON)


def test_the_remote_service_request_is_fetched_and_becomes_the_referral(bridge, ehr):
    url = remote_referral(ehr)
    resp = post_task(bridge, url)
    assert resp.status_code == 201, resp.get_json()
    assert ehr.requests == [("GET", "/fhir/ServiceRequest/sr-remote-1")]
    [row] = bridge.get("/api/v1/referrals").get_json()["referrals"]
    assert row["task"] == f"Task/{resp.get_json()['id']}"
    assert row["placer_identifier"]["value"] == "SR-REMOTE-1"
    assert row["patient"] == "Patient/pat-rivera"
    local = bridge.get(f"/fhir/{row['service_request']}").get_json()
    assert local["identifier"][0]["value"] == "SR-REMOTE-1"
    assert post_task(bridge, url).status_code == 200  # a resent Task: no second anything


def test_a_remote_prescription_breaking_a_rule_names_it_through_the_focus(bridge, ehr):
    url = remote_referral(ehr, intent="plan")
    resp = post_task(bridge, url)
    assert resp.status_code == 422
    exprs = [i["expression"] for i in resp.get_json()["issue"] if i["severity"] == "error"]
    assert exprs == [["Task.focus.resolve().intent"]]


def test_an_unregistered_server_is_never_called(bridge, ehr):
    resp = post_task(bridge, "http://elsewhere.example.org/fhir/ServiceRequest/1")
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == ["Task.focus"]


def test_a_missing_or_failing_remote_resource(bridge, ehr):
    missing = post_task(bridge, f"{ehr.base}/ServiceRequest/nope")
    assert missing.status_code == 422
    ehr.status_override = 503
    failing = post_task(bridge, remote_referral(ehr))
    assert failing.status_code == 502
    assert failing.get_json()["issue"][0]["code"] == "transient"
    assert bridge.get("/api/v1/referrals").get_json()["referrals"] == []
