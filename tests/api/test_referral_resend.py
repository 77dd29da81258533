"""Re-sent referrals: nothing answered 200 is dropped, nothing is duplicated, nothing is
matched by position, and every change is checked by the rules and shown in the inbox.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.support.tokens import bearer

FHIR_JSON = "application/fhir+json"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles" / "referrals"
PLACER = "urn:oid:2.16.840.1.113883.19.5|SR-9411"


def whiplash(conditional_sr: bool = True) -> dict:
    bundle = json.loads((SAMPLES / "whiplash-transaction.json").read_text())
    if conditional_sr:  # as many EHRs send it: a conditional create on the placer identifier
        bundle["entry"][-1]["request"]["ifNoneExist"] = f"identifier={PLACER}"
    return bundle


def sr_of(bundle: dict) -> dict:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )


def post(client, bundle: dict, headers: dict | None = None):
    return client.post("/fhir", data=json.dumps(bundle), content_type=FHIR_JSON, headers=headers)


def count(client, rtype: str) -> int:
    return client.get(f"/fhir/{rtype}?_summary=count").get_json()["total"]


def locations(resp) -> list[str]:
    return [e["response"]["location"] for e in resp.get_json()["entry"]]


def the_referral(client) -> dict:
    (row,) = client.get("/api/v1/referrals").get_json()["referrals"]
    return row


@pytest.mark.parametrize("conditional_sr", [True, False])
def test_an_unchanged_resend_changes_nothing_and_duplicates_nothing(client, conditional_sr):
    first = post(client, whiplash(conditional_sr))
    assert first.status_code == 200
    counts = {t: count(client, t) for t in ("Condition", "PractitionerRole", "Patient", "Task")}
    for _ in range(2):
        again = post(client, whiplash(conditional_sr))
        assert again.status_code == 200
        assert locations(again) == locations(first)
        assert all(e["response"]["status"] == "200 OK" for e in again.get_json()["entry"])
    assert {t: count(client, t) for t in counts} == counts
    assert the_referral(client)["changes"] == []


@pytest.mark.parametrize("conditional_sr", [True, False])
def test_a_changed_resend_is_stored_as_a_new_version_and_the_inbox_says_what_changed(
    app, client, conditional_sr
):
    post(client, whiplash(conditional_sr))
    changed = whiplash(conditional_sr)
    sr_of(changed)["note"] = [{"text": "New safety instruction: no cervical manipulation"}]
    sr_of(changed)["occurrenceTiming"]["repeat"]["count"] = 12
    headers = bearer(app, role="admin", client_id="northside-ehr-bridge")
    resp = post(client, changed, headers)
    assert resp.status_code == 200
    sr_entry = resp.get_json()["entry"][-1]["response"]
    assert sr_entry["location"].endswith("/_history/2")
    sr_id = sr_entry["location"].split("/")[1]
    stored = client.get(f"/fhir/ServiceRequest/{sr_id}").get_json()
    assert stored["note"] == [{"text": "New safety instruction: no cervical manipulation"}]
    (change,) = the_referral(client)["changes"]
    assert change["by"] == "northside-ehr-bridge"
    assert change["version"] == 2
    assert "note[0].text changed" in change["changes"] or "note changed" in change["changes"]
    assert any(line.endswith("-> 12") for line in change["changes"])
    assert the_referral(client)["prescribed"]["visits"] == 12


@pytest.mark.parametrize(
    ("edit", "expression"),
    [
        (lambda sr: sr.update(intent="plan"), "intent"),
        (lambda sr: sr.pop("requester"), "requester"),
        (
            lambda sr: sr["reasonCode"][0]["coding"][0].update(code="S13"),
            "reasonCode[0].coding[0].code",
        ),
    ],
)
def test_an_invalid_resend_is_refused_and_the_referral_on_file_is_untouched(
    client, edit, expression
):
    first = post(client, whiplash())
    sr_id = locations(first)[-1].split("/")[1]
    before = client.get(f"/fhir/ServiceRequest/{sr_id}").get_json()
    bad = whiplash()
    edit(sr_of(bad))
    resp = post(client, bad)
    assert resp.status_code == 422
    paths = [p for i in resp.get_json()["issue"] for p in i.get("expression", [])]
    assert any(p.endswith(f"ServiceRequest).{expression}") for p in paths), paths
    assert client.get(f"/fhir/ServiceRequest/{sr_id}").get_json() == before
    assert the_referral(client)["changes"] == []


def test_a_changed_condition_without_identifier_is_a_new_condition(client):
    post(client, whiplash())
    changed = whiplash()
    condition = next(
        e["resource"] for e in changed["entry"] if e["resource"]["resourceType"] == "Condition"
    )
    condition["code"]["text"] = "Whiplash with occipital headache"
    resp = post(client, changed)
    assert resp.status_code == 200
    statuses = {
        e["response"]["location"].split("/")[0]: e["response"]["status"]
        for e in resp.get_json()["entry"]
    }
    assert statuses["Condition"] == "201 Created"
    assert statuses["ServiceRequest"] == "200 OK"
    assert count(client, "Condition") == 2
    sr = client.get(f"/fhir/ServiceRequest/{locations(resp)[-1].split('/')[1]}").get_json()
    new_condition = next(loc for loc in locations(resp) if loc.startswith("Condition/"))
    assert sr["reasonReference"][0]["reference"] == new_condition.split("/_history")[0]


def test_a_new_referral_never_reuses_another_referrals_unidentified_entries(client):
    post(client, whiplash())
    other = whiplash(conditional_sr=False)
    sr_of(other)["identifier"][0]["value"] = "SR-9999"
    resp = post(client, other)
    assert resp.status_code == 200
    assert count(client, "Condition") == 2
    assert count(client, "ServiceRequest") == 2


def test_a_stale_condition_cannot_merge_a_new_npi_into_another_practitioner(client):
    post(client, whiplash())
    other = whiplash(conditional_sr=False)
    sr_of(other)["identifier"][0]["value"] = "SR-9998"
    practitioner = next(
        e for e in other["entry"] if e["resource"]["resourceType"] == "Practitioner"
    )
    practitioner["resource"]["identifier"][0]["value"] = "1987654320"  # bad check digit
    resp = post(client, other)
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == [
        f"Bundle.entry[{other['entry'].index(practitioner)}].request.ifNoneExist"
    ]
    practitioner["request"]["ifNoneExist"] = "identifier=http://hl7.org/fhir/sid/us-npi|1987654320"
    resp = post(client, other)
    assert resp.status_code == 422  # now the NPI itself is checked, and refused
    assert "1987654320" in resp.get_json()["issue"][0]["diagnostics"]
    assert count(client, "Practitioner") == 1


def test_a_task_that_is_neither_a_referral_nor_a_data_request_is_refused(client):
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    resp = client.post("/fhir/Task", data=json.dumps(task), content_type=FHIR_JSON)
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == ["Task.code"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": copy.deepcopy(task), "request": {"method": "POST", "url": "Task"}}],
    }
    resp = post(client, bundle)
    assert resp.status_code == 422
    assert resp.get_json()["issue"][0]["expression"] == [
        "Bundle.entry[0].resource.ofType(Task).code"
    ]
    assert count(client, "Task") == 0


def test_a_patient_on_file_that_differs_is_kept_and_the_inbox_says_what_differs(client):
    post(client, whiplash())
    patient_loc = next(loc for loc in locations(post(client, whiplash())) if "Patient/" in loc)
    before = client.get(f"/fhir/{patient_loc.split('/_history')[0]}").get_json()
    other = whiplash(conditional_sr=False)
    sr_of(other)["identifier"][0]["value"] = "SR-9997"
    patient = next(e for e in other["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["resource"]["telecom"] = [{"system": "phone", "value": "+1-614-555-0199"}]
    resp = post(client, other)
    assert resp.status_code == 200
    after = client.get(f"/fhir/{patient_loc.split('/_history')[0]}").get_json()
    assert after == before  # kept as it was
    sr_response = resp.get_json()["entry"][-1]["response"]
    (warning,) = [i for i in sr_response["outcome"]["issue"] if i["code"] == "conflict"]
    assert "telecom" in warning["diagnostics"]
    assert "555-0199" not in warning["diagnostics"]  # element names, never values
    rows = client.get("/api/v1/referrals").get_json()["referrals"]
    (row,) = [r for r in rows if r["placer_identifier"]["value"] == "SR-9997"]
    assert any("telecom" in w["diagnostics"] for w in row["warnings"])
