"""A documented visit reaches the referring physician's FHIR server once: real routing, payload,
worker and an HTTP peer; a second cycle sends nothing more."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_bridge.outbox.pipeline import make_worker
from fhir_bridge.outbox.worker import WorkerConfig
from fhir_bridge.store.db import write_session
from fhir_bridge.store.partners import PartnerStore
from tests.api.test_referrals import act, on_file, post, post_session, referral, session  # noqa: F401
from tests.support.fhir_peer import fhir_peer


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def test_a_visit_reaches_the_physician_once(client, runtime, on_file):  # noqa: F811
    with fhir_peer() as peer:
        with write_session(runtime.sessions) as s:
            PartnerStore(s).add(
                key="northside",
                name="Northside Family Medicine",
                kind="physician",
                base_url=peer.base,
                events=["referral.accepted", "session.documented"],
                identifiers=[{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1407071236"}],
                auth_kind="none",
                auth={},
                now=now(),
            )
        sr_id = post(client, "/fhir/ServiceRequest", referral()).get_json()["id"]
        act(client, sr_id, "accept")
        assert post_session(client, session("V-1")).status_code == 201
        worker = make_worker(runtime, WorkerConfig(worker_id="t"), clock=now, sleep=lambda _: None)
        sent = worker.run_once()
        sent += worker.run_once()
        assert sent == 2
        assert len(peer.received) == 2
        kinds = [sorted({e["resource"]["resourceType"] for e in b["entry"]}) for b in peer.received]
        assert ["Task"] in kinds
        assert any("Procedure" in k and "Patient" in k for k in kinds)
        assert worker.run_once() == 0
        assert len(peer.received) == 2
        deliveries = client.get("/api/v1/deliveries").get_json()
        assert {d["status"] for d in deliveries["deliveries"]} == {"delivered"}
