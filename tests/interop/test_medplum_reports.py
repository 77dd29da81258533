"""A filed progress report reaches Medplum (tests/interop/peer.py) as one DocumentReference,
valid at the peer, linked to the peer's Patient; a re-sent or regenerated report adds none."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
import requests

from tests.api.test_referrals import on_file, post_session, session  # noqa: F401
from tests.interop.test_medplum_delivery import (
    bundles,
    documented_visit,
    drain,
    register,
    rows,
    versions,
    worker,
)

REPORT_SYSTEM = "https://clinic.example.org/fhir/report"


@pytest.fixture
def settings(settings):
    """A progress report after every visit."""
    return replace(settings, report_every_visits=1)


def test_a_report_reaches_the_peer_once_and_a_new_version_updates_it(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    register(runtime, medplum.base, ["report.generated"])
    documented_visit(client)
    assert drain(worker(runtime)) == 1
    [row] = rows(runtime)
    assert (row.event_type, row.status, row.last_status) == ("report.generated", "delivered", 200)
    [sent] = bundles(runtime)
    requests_ = [(e["request"]["method"], e["resource"]["resourceType"]) for e in sent["entry"]]
    assert requests_ == [("POST", "Patient"), ("PUT", "DocumentReference")]

    [doc] = medplum.search("DocumentReference")
    [patient] = medplum.search("Patient")
    sr_id = client.get("/api/v1/referrals").get_json()["referrals"][0]["id"]
    assert medplum.count("DocumentReference", REPORT_SYSTEM, f"{sr_id}/progress") == 1
    assert doc["subject"]["reference"] == f"Patient/{patient['id']}"
    assert doc["type"]["coding"][0]["code"] == "11506-3"
    pdf = next(
        c["attachment"]
        for c in doc["content"]
        if c["attachment"]["contentType"] == "application/pdf"
    )
    assert base64.b64decode(pdf["data"]).startswith(b"%PDF")
    related = doc["context"]["related"]
    assert all("reference" not in r for r in related)  # logical: the peer has none of them
    placer = related[0]["identifier"]
    assert (related[0]["type"], placer["value"]) == ("ServiceRequest", "SR-8891")

    # a crash after the send: the same bytes again match and change nothing
    types = {"Patient", "DocumentReference"}
    before = versions(medplum, types)
    resp = requests.post(
        medplum.base,
        data=row.payload,
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text[:2000]
    assert {e["response"]["status"] for e in resp.json()["entry"]} == {"200"}
    assert versions(medplum, types) == before

    # the next visit regenerates it: the peer's one DocumentReference gets a new version
    assert post_session(client, session("V-2")).status_code == 201
    assert drain(worker(runtime)) == 1
    assert medplum.count("DocumentReference", REPORT_SYSTEM, f"{sr_id}/progress") == 1
    assert medplum.total("DocumentReference") == 1
    assert len(medplum.history("DocumentReference", doc["id"])) == 2
    assert medplum.search("Patient") == [patient]
