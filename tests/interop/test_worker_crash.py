"""Crash test: ``fhir-bridge worker`` killed with SIGKILL at random points while it delivers 500
visits to the Medplum peer, restarted each time; at the end every visit is at the peer exactly
once (counted by identifier) and every delivery is ``delivered``. Both databases.

The worker runs as a real subprocess (``python -m fhir_bridge worker``) with a short lease
(``--lease-seconds``), so rows a killed worker held come back within seconds. A kill lands
after the worker has been seen delivering, at a seeded random moment (the seed fixes the
delays, not the scheduling), so kills fall before, during and after sends and their records.
The worker records a batch's results in one write after its sends, so a kill after the peer
answered and before that write makes the next worker send up to a batch of stored Bundles
again; the peer's conditional creates and updates must absorb that. The peer counts those
resends (identical bytes received again); the test prints them with its timings (``-s``).
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fhir_bridge.mapping.delivery_bundle import ClinicSystems
from fhir_bridge.records.openapi import EXAMPLE_RECORD
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.models import Delivery
from tests.api.test_referrals import act, post, post_session, referral
from tests.factories import patient, practitioner, store_all
from tests.interop.peer import MedplumPeer
from tests.interop.test_medplum_delivery import NPI, entry_key, register

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261201
PATIENTS = 100
VISITS = 5  # per patient: 500 visits
KILLS = 8
LEASE_SECONDS = 4.0
TIMEOUT_SECONDS = 1.2
DRAIN_DEADLINE = 240.0

pytestmark = pytest.mark.slow


def _visit(mrn: str, placer: str, number: int) -> dict[str, Any]:
    record = copy.deepcopy(EXAMPLE_RECORD)
    day = date(2026, 11, 20) + timedelta(days=7 * number)
    record["session_id"] = f"CRASH-{mrn}-{number}"
    record["patient"]["mrn"] = mrn
    record["referral"]["value"] = placer
    record["started_at"] = f"{day}T10:00:00-05:00"
    record["ended_at"] = f"{day}T10:55:00-05:00"
    for assessment in record["assessments"]:
        if "at" in assessment:
            assessment["at"] = f"{day}T{assessment['at'].split('T')[1]}"
    return record


def _document_visits(client: Any, runtime: Runtime) -> None:
    """100 patients on file, each with an accepted referral and five documented visits."""
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
    for number in range(VISITS):
        for i in range(PATIENTS):
            resp = post_session(client, _visit(f"P-{i:04d}", f"SR-{i:04d}", number))
            assert resp.status_code == 201, resp.get_json()


def _statuses(runtime: Runtime) -> Counter[str]:
    with read_session(runtime.sessions) as s:
        found = s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return Counter(dict(found.all()))


def _start_worker(database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FHIR_BRIDGE_DATABASE_URL": database_url,
        "FHIR_BRIDGE_PUBLIC_BASE_URL": "http://bridge.test",
        "FHIR_BRIDGE_LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fhir_bridge",
                "worker",
                "--lease-seconds",
                str(LEASE_SECONDS),
                "--timeout",
                str(TIMEOUT_SECONDS),
                "--idle-seconds",
                "0.2",
                "--backoff-base",
                "0.2",
                "--backoff-cap",
                "1",
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigkilled_workers_deliver_every_visit_exactly_once(
    client, runtime, database_url, medplum: MedplumPeer, tmp_path: Path
) -> None:
    register(runtime, medplum.base, ["session.documented"])
    started = time.monotonic()
    _document_visits(client, runtime)
    setup_seconds = time.monotonic() - started

    rng = random.Random(SEED)
    log = tmp_path / "worker.log"
    kills = 0
    in_flight_at_kill = 0
    started = time.monotonic()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(KILLS):
            worker = _start_worker(database_url, log)
            workers.append(worker)
            seen = medplum.stats()["transactions"]
            # kill only once this worker has been seen sending, at a random moment after that
            _wait(
                lambda w=worker, s=seen: (
                    w.poll() is not None or medplum.stats()["transactions"] > s
                ),
                60,
                "the worker to send",
            )
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 1.5))
            with read_session(runtime.sessions) as s:
                in_flight_at_kill += bool(
                    s.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .where(Delivery.status == "pending", Delivery.lease_until.is_not(None))
                    )
                )
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
            if _statuses(runtime)["pending"] == 0:
                break
        worker = _start_worker(database_url, log)
        workers.append(worker)
        try:
            _wait(
                lambda: _statuses(runtime)["pending"] == 0 or worker.poll() is not None,
                DRAIN_DEADLINE,
                "the queue to empty",
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    deliver_seconds = time.monotonic() - started

    # every delivery delivered; nothing dead, nothing left
    assert _statuses(runtime) == Counter({"delivered": PATIENTS * VISITS}), log.read_text()[-3000:]

    # every visit's Procedure (and every other entry) at the peer exactly once, by identifier
    with read_session(runtime.sessions) as s:
        payloads = [json.loads(p) for p in s.scalars(select(Delivery.payload))]
    sent = Counter(entry_key(e) for b in payloads for e in b["entry"])
    procedures = {k for k in sent if k[0] == "Procedure"}
    assert len(procedures) == PATIENTS * VISITS
    for resource_type, system, value in sorted(procedures):
        assert medplum.count(resource_type, system, value) == 1, value
    held = Counter(
        (r["resourceType"], i["system"], i["value"])
        for t in ("Patient", "Procedure", "Observation", "Goal", "Task")
        for r in medplum.search(t)
        for i in r.get("identifier", [])
        if (r["resourceType"], i["system"], i["value"]) in sent
    )
    assert held == Counter(set(sent)), "some entry is missing or duplicated at the peer"
    mrn = ClinicSystems(runtime.settings.clinic_system_base).mrn
    assert medplum.total("Patient") == PATIENTS
    assert all(medplum.count("Patient", mrn, f"P-{i:04d}") == 1 for i in range(PATIENTS))

    stats = medplum.stats()
    resent = stats["repeatedTransactions"]
    print(
        f"\ncrash test [{database_url.split(':')[0]}]: setup {setup_seconds:.1f}s, "
        f"delivery {deliver_seconds:.1f}s, {kills} SIGKILLs ({in_flight_at_kill} with rows "
        f"leased), {stats['transactions']} transactions at the peer ({resent} resends), "
        f"statuses {stats['byStatus']}"
    )
    assert kills >= 3
    assert stats["transactions"] - PATIENTS * VISITS == resent  # every extra one a resend
