"""Deliveries to a real, independent FHIR server: Medplum's FHIR logic (tests/interop/peer.py).

The bridge is real end to end (referral intake, session API, routing, payload, the worker and
its sender, both databases); the partner is Medplum's FhirRouter and in-memory repository, which
runs each transaction Bundle's conditional creates and updates and validates every resource
against the R4 StructureDefinitions. What the peer holds afterwards is checked through plain
FHIR searches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from fhir_bridge.mapping.delivery_bundle import ClinicSystems
from fhir_bridge.outbox.pipeline import make_worker
from fhir_bridge.outbox.worker import Worker, WorkerConfig
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.models import Delivery
from fhir_bridge.store.partners import PartnerStore
from tests.api.test_referrals import act, on_file, post, post_session, referral, session  # noqa: F401
from tests.interop.peer import MedplumPeer

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NPI = "1407071236"  # the referring physician on file (``on_file``)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Clock:
    """A settable clock (naive UTC), starting now."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def register(runtime: Runtime, base: str, events: list[str]) -> None:
    """The Medplum peer as the referring physician's server (auth none)."""
    with write_session(runtime.sessions) as s:
        PartnerStore(s).add(
            key="medplum",
            name="Medplum peer",
            kind="physician",
            base_url=base,
            events=events,
            identifiers=[{"system": NPI_SYSTEM, "value": NPI}],
            auth_kind="none",
            auth={},
            now=utcnow(),
        )


def worker(runtime: Runtime, clock: Any = utcnow) -> Worker:
    config = WorkerConfig(worker_id="interop", timeout=10)
    return make_worker(runtime, config, clock=clock, sleep=lambda _s: None)


def drain(w: Worker, cycles: int = 20) -> int:
    """Run cycles until one attempts nothing; the number of attempts."""
    total = 0
    for _ in range(cycles):
        attempted = w.run_once()
        if attempted == 0:
            return total
        total += attempted
    raise AssertionError("the worker still had work after 20 cycles")


def rows(runtime: Runtime) -> list[Delivery]:
    with read_session(runtime.sessions) as s:
        found = list(s.scalars(select(Delivery).order_by(Delivery.pk)))
        for row in found:
            s.expunge(row)
        return found


def bundles(runtime: Runtime) -> list[dict[str, Any]]:
    """The Bundles the worker sent (stored on the delivery rows), in delivery order."""
    return [json.loads(r.payload) for r in rows(runtime) if r.payload is not None]


def entry_key(entry: dict[str, Any]) -> tuple[str, str, str]:
    """(type, system, value) an entry is conditional on (``ifNoneExist`` or the PUT's query)."""
    request = entry["request"]
    query = request.get("ifNoneExist") or urlsplit(request["url"]).query
    [token] = parse_qs(query)["identifier"]  # no FHIR escapes in the clinic's identifiers
    system, _, value = token.partition("|")
    resource_type = request["url"].split("?")[0]
    carried = [(i.get("system"), i.get("value")) for i in entry["resource"]["identifier"]]
    assert (system, value) in carried, f"{resource_type} is keyed on an identifier it lacks"
    return resource_type, system, value


def keys(sent: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {entry_key(e) for b in sent for e in b["entry"]}


def literal_references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from literal_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from literal_references(item)


def versions(peer: MedplumPeer, types: set[str]) -> dict[tuple[str, str], str]:
    """(type, id) -> meta.versionId of everything the peer holds of ``types``."""
    return {
        (r["resourceType"], r["id"]): r["meta"]["versionId"]
        for t in sorted(types)
        for r in peer.search(t)
    }


def mrn_system(runtime: Runtime) -> str:
    return ClinicSystems(runtime.settings.clinic_system_base).mrn


def documented_visit(client: Any, session_id: str = "V-1") -> None:
    """The referral on file (SR-8891 for Ana Rivera, P-1001), accepted, and a visit on it."""
    sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
    assert act(client, sr_id, "accept").status_code == 200
    resp = post_session(client, session(session_id))
    assert resp.status_code == 201, resp.get_json()


def test_a_visit_is_a_valid_transaction_result_at_the_peer_once(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    register(runtime, medplum.base, ["referral.accepted", "session.documented"])
    documented_visit(client)
    assert drain(worker(runtime)) == 2
    assert {r.status for r in rows(runtime)} == {"delivered"}, [
        (r.event_type, r.last_status, r.outcome) for r in rows(runtime)
    ]
    assert {r.last_status for r in rows(runtime)} == {200}
    sent = bundles(runtime)
    types = sorted({e["resource"]["resourceType"] for e in sent[-1]["entry"]})
    assert types == ["Goal", "Observation", "Patient", "Procedure", "Task"]

    # every entry of every Bundle is at the peer exactly once, found by its identifier
    for resource_type, system, value in keys(sent):
        assert medplum.count(resource_type, system, value) == 1, (resource_type, value)
    [patient] = medplum.search("Patient")  # one Patient, created conditionally
    assert {"system": mrn_system(runtime), "value": "P-1001"} in [
        {k: i.get(k) for k in ("system", "value")} for i in patient["identifier"]
    ]
    observations = [e for e in sent[-1]["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert medplum.total("Observation") == len(observations) > 0

    # the peer resolved the Bundle's internal references to its own resources
    [procedure] = medplum.search("Procedure")
    assert procedure["subject"]["reference"] == f"Patient/{patient['id']}"
    for resource_type in ("Procedure", "Observation", "Goal", "Task"):
        for resource in medplum.search(resource_type):
            for ref in literal_references(resource):
                assert not ref.startswith("urn:uuid:"), (resource_type, ref)
                medplum.get(ref)  # resolves at the peer
    # one transaction per delivery, none refused
    stats = medplum.stats()
    assert stats["transactions"] == 2
    assert {s for s in stats["byStatus"] if not s.startswith("2")} == set()

    # nothing left: another cycle sends nothing
    assert worker(runtime).run_once() == 0
    assert medplum.stats()["transactions"] == 2


def test_resending_the_same_bundles_changes_nothing_at_the_peer(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    register(runtime, medplum.base, ["referral.accepted", "session.documented"])
    documented_visit(client)
    types = {"Patient", "Goal", "Procedure", "Observation", "Task"}
    w = worker(runtime)
    # per patient one at a time: the referral's Task first, then the visit
    for event in ("referral.accepted", "session.documented"):
        assert w.run_once() == 1
        [row] = [r for r in rows(runtime) if r.event_type == event]
        assert row.status == "delivered"
        before = versions(medplum, types)
        kept = {key: len(medplum.history(*key)) for key in before}
        # a crash after the send and before the record: the same stored bytes go again
        resp = requests.post(
            medplum.base,
            data=row.payload,
            headers={"Content-Type": "application/fhir+json"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text[:2000]
        statuses = {e["response"]["status"] for e in resp.json()["entry"]}
        assert statuses == {"200"}  # every entry matched; nothing created
        assert versions(medplum, types) == before  # ... and nothing changed
        assert {key: len(medplum.history(*key)) for key in before} == kept
    assert w.run_once() == 0
    before = versions(medplum, types)

    # a replayed visit at the bridge sends nothing new
    assert post_session(client, session("V-1")).status_code == 200
    assert drain(worker(runtime)) == 0
    assert versions(medplum, types) == before

    # a second visit: a new Procedure; the Patient is matched, not created or changed again
    [patient] = medplum.search("Patient")
    assert post_session(client, session("V-2")).status_code == 201
    assert drain(worker(runtime)) >= 1
    assert medplum.search("Patient") == [patient]
    assert medplum.total("Procedure") == 2
    for resource_type, system, value in keys(bundles(runtime)):
        assert medplum.count(resource_type, system, value) == 1, (resource_type, value)


def test_an_outage_with_retry_after_delays_the_visit_then_it_arrives_once(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    register(runtime, medplum.base, ["session.documented"])
    documented_visit(client)
    clock = Clock(utcnow() + timedelta(seconds=1))
    w = worker(runtime, clock)
    medplum.outage(503, retry_after=30)

    assert w.run_once() == 1
    [row] = rows(runtime)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, 503)
    assert row.next_attempt_at >= clock.now + timedelta(seconds=30)  # Retry-After honoured
    assert json.loads(row.outcome)["resourceType"] == "OperationOutcome"
    clock.advance(seconds=29)
    assert w.run_once() == 0  # not due yet
    assert medplum.stats()["outageAnswers"] == 1

    clock.advance(hours=2)
    assert w.run_once() == 1  # still down: tried again, later
    [row] = rows(runtime)
    assert (row.status, row.attempts) == ("pending", 2)

    medplum.end_outage()
    clock.advance(hours=2)
    assert drain(w) == 1
    [row] = rows(runtime)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 3, 200)
    stats = medplum.stats()
    assert (stats["outageAnswers"], stats["transactions"]) == (2, 1)
    for resource_type, system, value in keys(bundles(runtime)):
        assert medplum.count(resource_type, system, value) == 1, (resource_type, value)
    assert medplum.total("Patient") == 1


def test_a_refused_bundle_is_a_dead_letter_with_the_peers_outcome_and_can_be_resent(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
):
    register(runtime, medplum.base, ["session.documented"])
    # the peer already holds two Patients with the clinic's MRN: the conditional create is
    # ambiguous, which FHIR answers with 412 Precondition Failed
    twin = {
        "resourceType": "Patient",
        "identifier": [{"system": mrn_system(runtime), "value": "P-1001"}],
    }
    ids = [medplum.post("Patient", twin).json()["id"] for _ in range(2)]
    documented_visit(client)
    assert worker(runtime).run_once() == 1

    [row] = rows(runtime)
    assert (row.status, row.attempts, row.last_status) == ("dead", 1, 412)
    outcome = json.loads(row.outcome)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "multiple-matches"
    # the transaction was all or nothing at the peer
    assert medplum.total("Procedure") == medplum.total("Observation") == 0
    # the dead letter in the operator's API, with the peer's OperationOutcome
    [dead] = client.get("/api/v1/deliveries?status=dead").get_json()["deliveries"]
    detail = client.get(f"/api/v1/deliveries/{dead['id']}").get_json()
    assert (detail["last_status"], detail["outcome"]) == (412, outcome)
    assert worker(runtime).run_once() == 0  # a dead letter is not retried on its own

    # the partner fixes its data; the operator resends; the visit arrives once
    assert requests.delete(f"{medplum.base}/Patient/{ids[1]}", timeout=10).status_code == 200
    assert client.post(f"/api/v1/deliveries/{dead['id']}/retry").status_code == 200
    assert drain(worker(runtime)) == 1
    [row] = rows(runtime)
    assert (row.status, row.last_status) == ("delivered", 200)
    [patient] = medplum.search("Patient")
    assert patient["id"] == ids[0]
    [procedure] = medplum.search("Procedure")
    assert procedure["subject"]["reference"] == f"Patient/{ids[0]}"


@pytest.mark.parametrize("status", [400, 422])
def test_other_refusals_are_dead_letters_with_the_outcome(
    client,
    runtime,
    on_file,  # noqa: F811
    medplum,
    status,
):
    register(runtime, medplum.base, ["session.documented"])
    documented_visit(client)
    medplum.outage(status)
    assert worker(runtime).run_once() == 1
    [row] = rows(runtime)
    assert (row.status, row.last_status) == ("dead", status)
    assert json.loads(row.outcome)["issue"][0]["severity"] == "error"
    medplum.end_outage()
    assert medplum.total("Procedure") == 0
