"""Scale-out end to end: two ``serve`` nodes and two workers on one PostgreSQL database.

Every visit is posted to both nodes at once (a clinic system retrying against a load balancer
does this): the store keeps one event per fact and one delivery per event and partner, so each
visit reaches the partner exactly once, counted at the partner (``tests/support/fhir_peer``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.models import Delivery, OutboxCursor, OutboxEvent
from tests.api.test_referrals import act, post, referral
from tests.factories import patient, practitioner, store_all
from tests.interop.test_medplum_delivery import NPI, register
from tests.interop.test_worker_crash import _visit
from tests.support.fhir_peer import FhirPeer, fhir_peer
from tests.support.served import served_bridge, start_worker, stop

PATIENTS = 40
VISITS = 3  # per patient: 120 visits
DRAIN_DEADLINE = 180.0

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.postgres]


def _referrals(client: Any, runtime: Runtime) -> None:
    """The patients on file, each with an accepted referral for all of their visits."""
    store_all(
        runtime,
        [practitioner("dr-natarajan", NPI, "Natarajan", "Priya")]
        + [patient(f"pat-{i}", f"P-{i:04d}", "Rivera", "Ana") for i in range(PATIENTS)],
    )
    for i in range(PATIENTS):
        body = referral(f"SR-{i:04d}", subject={"reference": f"Patient/pat-{i}"})
        body["occurrenceTiming"]["repeat"]["count"] = VISITS
        body["occurrenceTiming"]["repeat"]["boundsPeriod"]["end"] = "2027-12-31"
        resp = post(client, "/fhir/ServiceRequest", body)
        assert resp.status_code == 201, resp.get_json()
        assert act(client, resp.get_json()["id"], "accept").status_code == 200


def _count(runtime: Runtime, column: Any, *where: Any) -> int:
    with read_session(runtime.sessions) as s:
        return int(s.scalar(select(func.count(column)).where(*where)))


def _router_cursor(runtime: Runtime) -> Any:
    """The router's cursor (how far the outbox is routed), as a scalar subquery."""
    cursor = select(OutboxCursor.last_pk).where(OutboxCursor.name == "router")
    return func.coalesce(cursor.scalar_subquery(), 0)


def _procedure_keys(peer: FhirPeer) -> Counter[str]:
    """How many Bundles the peer took per visit (its Procedure's session identifier)."""
    with peer.lock:
        bundles = list(peer.received)
    return Counter(
        ident["value"]
        for bundle in bundles
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Procedure"
        for ident in entry["resource"].get("identifier", [])
        if ident.get("value", "").endswith("/procedure")
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_nodes_and_two_workers_deliver_each_visit_once(
    client, runtime, database_url, tmp_path: Path
) -> None:
    _referrals(client, runtime)
    visits = [
        _visit(f"P-{i:04d}", f"SR-{i:04d}", n) for n in range(VISITS) for i in range(PATIENTS)
    ]
    log = tmp_path / "scale-out.log"
    open_access = {"FHIR_BRIDGE_DEV_OPEN_ACCESS": "true"}
    with (
        fhir_peer() as peer,
        served_bridge(database_url, log=log, **open_access) as node_a,
        served_bridge(database_url, log=log, **open_access) as node_b,
    ):
        register(runtime, peer.base, ["session.documented"])
        args = ["--idle-seconds", "0.2", "--backoff-base", "0.2", "--backoff-cap", "1"]
        workers = [start_worker(database_url, log, *args) for _ in range(2)]
        try:

            def both(visit: dict[str, Any]) -> list[int]:
                data = json.dumps(visit)
                headers = {"Content-Type": "application/json"}
                with ThreadPoolExecutor(max_workers=2) as pair:
                    answers = pair.map(
                        lambda base: (
                            requests.post(
                                f"{base}/api/v1/sessions", data=data, headers=headers, timeout=60
                            ).status_code
                        ),
                        (node_a, node_b),
                    )
                    return sorted(answers)

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=4) as pool:
                statuses = list(pool.map(both, visits))
            posted = time.monotonic()
            assert all(s in ([200, 201], [201, 201], [200, 200]) for s in statuses), statuses
            assert sum(s.count(201) for s in statuses) >= len(visits)

            deadline = time.monotonic() + DRAIN_DEADLINE
            routed = OutboxEvent.pk <= _router_cursor(runtime)
            while _count(runtime, OutboxEvent.pk, ~routed) or _count(
                runtime, Delivery.pk, Delivery.status != "delivered"
            ):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert all(w.poll() is None for w in workers), log.read_text()[-3000:]
                time.sleep(0.2)
            print(
                f"\nscale-out: {len(visits)} visits x 2 nodes posted in {posted - started:.1f}s, "
                f"delivered {time.monotonic() - posted:.1f}s later"
            )
        finally:
            codes = [stop(w) for w in workers]
        assert codes == [0, 0], log.read_text()[-3000:]

    documented = OutboxEvent.event_type == "session.documented"
    assert _count(runtime, OutboxEvent.pk, documented) == len(visits)
    visit_events = OutboxEvent.event_type == "referral.visit-documented"
    assert _count(runtime, OutboxEvent.pk, visit_events) == len(visits)
    assert _count(runtime, Delivery.pk, Delivery.event_type == "session.documented") == len(visits)
    received = _procedure_keys(peer)
    assert len(received) == len(visits)
    assert set(received.values()) == {1}, [k for k, n in received.items() if n > 1][:5]
