"""Pull mode against a real HTTP partner server, on both databases: referrals a physician's EHR
keeps on its own server are searched for, taken in through the intake once, and the cursor
moves; outages and refused referrals neither lose nor block anything."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from fhir_bridge.app import create_app, load_configured_tables
from fhir_bridge.cli import main
from fhir_bridge.fhir.poll_search import cursor_name, instant_micros
from fhir_bridge.services import partners as registry
from fhir_bridge.services.referral_poll import Poller
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.poll_state import load_cursor
from tests.api.test_referrals import PLAC_TYPE, PLACER, referral
from tests.support.partner_server import PartnerServer, partner_server

NPI = "http://hl7.org/fhir/sid/us-npi"
CLINIC_NPI = "1245319599"  # the settings' default clinic NPI
DOCTOR_NPI = "1407071236"
EHR_MRN = "urn:oid:2.16.840.1.113883.19.5.2"
TOKEN_ENV = "POLL_TEST_EHR_TOKEN"


# -- the physician's server ---------------------------------------------------------------------


def seed_directory(ehr: PartnerServer) -> None:
    """The EHR's patient, referring physician and its record of the clinic."""
    ehr.put(
        {
            "resourceType": "Patient",
            "id": "ehr-pat-1",
            "identifier": [{"system": EHR_MRN, "value": "E-7731"}],
            "name": [{"family": "Okafor", "given": ["Grace"]}],
            "birthDate": "1968-02-01",
        },
        "2026-11-01T08:00:00Z",
    )
    ehr.put(
        {
            "resourceType": "Practitioner",
            "id": "dr-1",
            "identifier": [{"system": NPI, "value": DOCTOR_NPI}],
            "name": [{"family": "Natarajan", "given": ["Priya"]}],
        },
        "2026-11-01T08:00:00Z",
    )
    ehr.put(
        {
            "resourceType": "Organization",
            "id": "massage-clinic",
            "identifier": [{"system": NPI, "value": CLINIC_NPI}],
            "name": "The clinic",
        },
        "2026-11-01T08:00:00Z",
    )


def ehr_referral(
    ehr: PartnerServer, placer: str, at: str, *, to_clinic: bool = True, **changes: Any
) -> dict[str, Any]:
    """A ServiceRequest on the EHR's server, addressed to the clinic (by reference) or not."""
    performer = "Organization/massage-clinic" if to_clinic else "Organization/other-clinic"
    sr = referral(
        placer,
        id=f"sr-{placer.lower()}",
        subject={"reference": "Patient/ehr-pat-1"},
        requester={"reference": "Practitioner/dr-1"},
        performer=[{"reference": performer}],
    )
    sr.update(changes)
    sr = {k: v for k, v in sr.items() if v is not None}
    ehr.put(sr, at)
    return sr


@pytest.fixture
def ehr() -> Iterator[PartnerServer]:
    with partner_server() as server:
        seed_directory(server)
        yield server


@pytest.fixture
def other_ehr() -> Iterator[PartnerServer]:
    with partner_server() as server:
        seed_directory(server)
        yield server


def register(runtime: Runtime, key: str, server: PartnerServer, **spec: Any) -> None:
    fields: dict[str, Any] = {
        "name": key.title(),
        "kind": "physician",
        "base_url": server.base,
        "auth_kind": "none",
        "identifiers": [f"{NPI}|{DOCTOR_NPI}"],
        "poll": True,
        **spec,
    }
    valid = registry.validate(registry.PartnerSpec(key=key, **fields))
    registry.add_partner(runtime, valid)


@pytest.fixture
def poller(runtime: Runtime) -> Poller:
    return Poller(runtime, load_configured_tables(runtime.settings), page_size=2)


@pytest.fixture
def api(runtime: Runtime):
    return create_app(runtime=runtime).test_client()


def inbox(api) -> list[dict[str, Any]]:
    resp = api.get("/api/v1/referrals")
    assert resp.status_code == 200
    return resp.get_json()["referrals"]


def placers(api) -> list[str]:
    return sorted(r["placer_identifier"]["value"] for r in inbox(api))


def scalar(runtime: Runtime, sql: str) -> Any:
    with runtime.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def cursor(runtime: Runtime, key: str, resource_type: str = "ServiceRequest") -> int | None:
    with read_session(runtime.sessions) as session:
        return load_cursor(session, cursor_name(key, resource_type))


def poll(poller: Poller, key: str | None = None):
    return {r.partner: r for r in poller.poll_all(key)}


# -- the tests ----------------------------------------------------------------------------------


def test_new_referrals_come_in_once_over_pages_and_a_second_poll_takes_nothing(
    runtime, poller, ehr, api
):
    register(runtime, "northside", ehr)
    ehr_referral(ehr, "SR-1", "2026-11-10T09:00:00Z")
    ehr_referral(ehr, "SR-2", "2026-11-10T09:05:00.250Z")
    ehr_referral(ehr, "SR-3", "2026-11-10T09:07:00+01:00")  # 08:07Z: the oldest
    ehr_referral(ehr, "SR-X", "2026-11-10T09:06:00Z", to_clinic=False)

    first = poll(poller)["northside"]
    assert first.ok
    assert first.taken == 3
    sr_pages = ehr.searches("ServiceRequest")
    assert len(sr_pages) == 2  # _count=2: the next link was followed
    assert sr_pages[1]["_offset"] == "2"
    assert placers(api) == ["SR-1", "SR-2", "SR-3"]
    rows = inbox(api)
    assert {r["patient_match"] for r in rows} == {"created", "identifier"}  # one Patient, reused
    assert scalar(runtime, "SELECT count(*) FROM resource WHERE resource_type = 'Patient'") == 1
    assert scalar(runtime, "SELECT count(*) FROM outbox_event") == 3
    assert cursor(runtime, "northside") == instant_micros("2026-11-10T09:05:00.250Z")
    stored = api.get(f"/fhir/{rows[0]['service_request']}").get_json()
    # the EHR's Patient/ehr-pat-1 is never ours: the referral names the Patient matched or
    # made from it here, so it is in that patient's compartment
    assert stored["subject"]["reference"] == rows[0]["patient"]
    assert stored["subject"]["reference"] != "Patient/ehr-pat-1"

    second = poll(poller)["northside"]
    assert second.ok
    assert second.taken == 0
    assert second.refused == 0
    assert ehr.searches("ServiceRequest")[-1]["_lastUpdated"] == "ge2026-11-10T09:05:00.250Z"
    assert placers(api) == ["SR-1", "SR-2", "SR-3"]
    assert scalar(runtime, "SELECT count(*) FROM outbox_event") == 3


def test_an_updated_service_request_is_a_new_version_not_a_second_referral(
    runtime, poller, ehr, api
):
    register(runtime, "northside", ehr)
    ehr_referral(ehr, "SR-1", "2026-11-10T09:00:00Z")
    poll(poller)
    [before] = inbox(api)
    assert before["prescribed"]["visits"] == 2

    timing = {"repeat": {"count": 6, "frequency": 2, "period": 1, "periodUnit": "wk"}}
    ehr_referral(ehr, "SR-1", "2026-11-12T14:00:00Z", occurrenceTiming=timing)
    result = poll(poller)["northside"]
    assert result.taken == 1
    [after] = inbox(api)
    assert after["service_request"] == before["service_request"]
    assert after["prescribed"]["visits"] == 6
    version = api.get(f"/fhir/{after['service_request']}").get_json()["meta"]["versionId"]
    assert version == "2"


def test_an_outage_loses_nothing_and_does_not_stop_other_partners(
    runtime, poller, ehr, other_ehr, api
):
    register(runtime, "a-down", ehr)
    register(runtime, "b-up", other_ehr)
    ehr_referral(ehr, "SR-A1", "2026-11-10T09:00:00Z")
    ehr_referral(other_ehr, "SR-B1", "2026-11-10T09:00:00Z")
    ehr.status_override = 503

    results = poll(poller)
    assert not results["a-down"].ok
    assert "503" in results["a-down"].error
    assert results["b-up"].ok
    assert results["b-up"].taken == 1
    assert cursor(runtime, "a-down") is None
    assert placers(api) == ["SR-B1"]

    ehr.status_override = None
    assert poll(poller, "a-down")["a-down"].taken == 1
    assert placers(api) == ["SR-A1", "SR-B1"]


def test_an_outage_in_the_middle_of_paging_resumes_after_the_last_page_taken_in(
    runtime, poller, ehr, api
):
    register(runtime, "northside", ehr)
    for n in range(1, 6):
        ehr_referral(ehr, f"SR-{n}", f"2026-11-10T09:0{n}:00Z")
    ehr.fail_from_offset = 2  # the second page answers 503

    stopped = poll(poller)["northside"]
    assert not stopped.ok
    assert stopped.taken == 2
    assert placers(api) == ["SR-1", "SR-2"]
    assert cursor(runtime, "northside") == instant_micros("2026-11-10T09:02:00Z")

    ehr.fail_from_offset = None
    resumed = poll(poller)["northside"]
    assert resumed.ok
    assert resumed.taken == 3
    assert placers(api) == [f"SR-{n}" for n in range(1, 6)]


def test_a_refused_referral_is_kept_and_does_not_block_later_ones(
    runtime, poller, ehr, api, caplog
):
    register(runtime, "northside", ehr)
    ehr_referral(ehr, "SR-BAD", "2026-11-10T09:00:00Z", intent="plan")
    ehr_referral(ehr, "SR-GOOD", "2026-11-10T09:30:00Z")

    with caplog.at_level(logging.INFO, logger="fhir_bridge"):
        result = poll(poller)["northside"]
    assert result.ok
    assert result.refused == 1
    assert result.taken == 1
    assert placers(api) == ["SR-GOOD"]
    assert cursor(runtime, "northside") == instant_micros("2026-11-10T09:30:00Z")
    kept = "SELECT count(*) FROM inbound_payload WHERE channel = 'poll-refused'"
    assert scalar(runtime, kept) == 1
    [refusal] = [r for r in caplog.records if r.getMessage() == "polled referral refused"]
    assert refusal.issues == ["value at ServiceRequest.intent"]
    # nothing that identifies a patient or a server reaches the logs
    logged = " ".join(str(vars(r)) for r in caplog.records)
    for phi in ("Okafor", "E-7731", "ehr-pat-1", "sr-sr-", "127.0.0.1"):
        assert phi not in logged

    # the same refused body is not offered again; once the EHR fixes it, it comes in
    assert poll(poller)["northside"].refused == 0
    ehr_referral(ehr, "SR-BAD", "2026-11-11T10:00:00Z")
    assert poll(poller)["northside"].taken == 1
    assert placers(api) == ["SR-BAD", "SR-GOOD"]


def test_a_fulfil_task_owned_by_the_clinic_brings_its_referral_and_tracks_it(
    runtime, poller, ehr, api
):
    register(runtime, "northside", ehr)
    # no performer: only the Task says it is for the clinic
    ehr_referral(ehr, "SR-T", "2026-11-10T09:00:00Z", performer=None)
    ehr.put(
        {
            "resourceType": "Task",
            "id": "task-1",
            "status": "requested",
            "intent": "order",
            "code": {
                "coding": [
                    {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}
                ]
            },
            "focus": {"reference": "ServiceRequest/sr-sr-t"},
            "for": {"reference": "Patient/ehr-pat-1"},
            "owner": {"identifier": {"system": NPI, "value": CLINIC_NPI}},
            "identifier": [{"type": PLAC_TYPE, "system": PLACER, "value": "TASK-1"}],
        },
        "2026-11-10T09:01:00Z",
    )

    result = poll(poller)["northside"]
    assert result.ok
    assert result.taken == 1  # the Task (the bare ServiceRequest search finds nothing for us)
    [row] = inbox(api)
    assert row["placer_identifier"]["value"] == "SR-T"
    task = api.get(f"/fhir/{row['task']}").get_json()
    assert task["focus"]["reference"] == f"{ehr.base}/ServiceRequest/sr-sr-t"
    assert cursor(runtime, "northside", "Task") == instant_micros("2026-11-10T09:01:00Z")
    assert poll(poller)["northside"].taken == 0
    assert len(inbox(api)) == 1


def test_a_server_that_ignores_the_filter_never_hands_us_another_clinics_referral(
    runtime, poller, ehr, api
):
    register(runtime, "northside", ehr)
    ehr.ignore_filters = True
    ehr_referral(ehr, "SR-OURS", "2026-11-10T09:00:00Z")
    ehr_referral(ehr, "SR-THEIRS", "2026-11-10T09:01:00Z", to_clinic=False)
    result = poll(poller)["northside"]
    assert result.taken == 1
    assert result.skipped == 1
    assert placers(api) == ["SR-OURS"]


def test_the_partners_bearer_token_is_sent_and_unpolled_partners_are_left_alone(
    runtime, poller, ehr, other_ehr, api, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    register(runtime, "northside", ehr, auth_kind="bearer", token_env=TOKEN_ENV)
    register(runtime, "push-only", other_ehr, poll=False)
    ehr_referral(ehr, "SR-1", "2026-11-10T09:00:00Z")
    ehr_referral(other_ehr, "SR-2", "2026-11-10T09:00:00Z")

    assert list(poll(poller)) == ["northside"]
    assert set(ehr.authorizations) == {"Bearer s3cret-token"}
    assert other_ehr.requests == []
    assert placers(api) == ["SR-1"]


# -- the commands -------------------------------------------------------------------------------


def cli(runtime: Runtime, *args: str):
    env = {
        "FHIR_BRIDGE_DATABASE_URL": runtime.settings.database_url,
        "FHIR_BRIDGE_TESTING": "true",
        "FHIR_BRIDGE_LOG_JSON": "false",
    }
    return CliRunner().invoke(main, list(args), env=env)


def test_partners_add_poll_then_poll_once_and_the_worker_polls_too(runtime, ehr, other_ehr, api):
    added = cli(
        runtime,
        *("partners", "add", "northside", "--name", "Northside", "--kind", "physician"),
        *("--base-url", ehr.base, "--identifier", f"{NPI}|{DOCTOR_NPI}", "--auth", "none"),
        "--poll",
    )
    assert added.exit_code == 0, added.output
    assert "9 event types, polled for referrals" in added.output
    payer = cli(
        runtime,
        *("partners", "add", "acme", "--name", "Acme", "--kind", "payer", "--base-url", ehr.base),
        *("--auth", "none", "--event", "poll-referrals"),
    )
    assert payer.exit_code == 2
    assert "only physician partners are polled" in payer.output

    ehr_referral(ehr, "SR-1", "2026-11-10T09:00:00Z")
    once = cli(runtime, "poll", "--once")
    assert once.exit_code == 0, once.output
    assert "northside: 1 taken in" in once.output
    assert placers(api) == ["SR-1"]

    unknown = cli(runtime, "poll", "--once", "--partner", "nobody")
    assert unknown.exit_code == 1
    assert "no partner with key 'nobody'" in unknown.output

    ehr.status_override = 503
    down = cli(runtime, "poll", "--once")
    assert down.exit_code == 1
    assert "stopped: ServiceRequest search answered HTTP 503" in down.output

    ehr.status_override = None
    ehr_referral(ehr, "SR-2", "2026-11-10T10:00:00Z")
    worked = cli(runtime, "worker", "--once", "--poll-every", "60")
    assert worked.exit_code == 0, worked.output
    assert placers(api) == ["SR-1", "SR-2"]
