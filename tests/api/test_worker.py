"""The delivery worker against a real HTTP partner (tests/support/fhir_peer.py), both databases.

Fakes, and why: ``outbox.routing.route_pending`` and ``outbox.payload`` are being
written in parallel, so these tests insert delivery rows themselves (``route`` is a no-op) and
build a minimal transaction Bundle naming the delivery (``_build``). Everything else is real:
the queue, the sender, partner auth ``none``, the HTTP server, the database.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from fhir_bridge.outbox import queue
from fhir_bridge.outbox.retry import RetryPolicy
from fhir_bridge.outbox.worker import Worker, WorkerConfig
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.models import Delivery, OutboxEvent
from fhir_bridge.store.partners import PartnerStore
from tests.support.fhir_peer import FhirPeer, fhir_peer

T0 = datetime(2026, 12, 1, 9, 0, 0)


@dataclass
class Clock:
    """A settable clock (naive UTC)."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _build(session: Session, job: queue.Job) -> dict[str, Any]:
    """Stand-in for build_payload: a transaction Bundle whose first fullUrl names the row."""
    pk = job.pk
    row = session.get(Delivery, pk)
    assert row is not None
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:delivery:{pk}",
                "resource": {"resourceType": "Basic", "id": f"d{pk}"},
                "request": {"method": "PUT", "url": f"Basic/d{pk}"},
                "note": row.patient_id,
            }
        ],
    }


_RETRY = {"backoff_base": "base", "backoff_cap": "cap", "max_age": "max_age"}


def _worker(runtime: Runtime, clock: Clock, name: str = "w1", **kwargs: Any) -> Worker:
    """A worker routing nothing and building ``_build``'s Bundles; ``kwargs``: WorkerConfig
    fields, backoff_base/backoff_cap/max_age for its RetryPolicy, ``build``/``build_many``."""
    kwargs.setdefault("timeout", 5.0)
    build = kwargs.pop("build", _build)
    build_many = kwargs.pop("build_many", None)
    retry = RetryPolicy(**{_RETRY[k]: kwargs.pop(k) for k in list(kwargs) if k in _RETRY})
    config = WorkerConfig(worker_id=name, retry=retry, **kwargs)
    return Worker(
        runtime,
        config,
        route=lambda _rt: 0,
        build=build,
        build_many=build_many,
        clock=clock,
        sleep=lambda _s: None,
    )


def _partner(runtime: Runtime, key: str, base: str) -> int:
    with write_session(runtime.sessions) as session:
        return (
            PartnerStore(session)
            .add(
                key=key,
                name=key,
                kind="physician",
                base_url=base,
                events=["session.documented"],
                identifiers=[],
                auth_kind="none",
                auth={},
                now=T0,
            )
            .pk
        )


def _deliveries(
    runtime: Runtime, partner_pk: int, patients: list[str | None], *, created: datetime = T0
) -> list[int]:
    """One outbox event and one pending delivery per entry of ``patients``, in that order."""
    pks = []
    with write_session(runtime.sessions) as session:
        for patient in patients:
            outbox = session.execute(
                insert(OutboxEvent)
                .values(
                    created_at=created,
                    event_type="session.documented",
                    resource_type="Encounter",
                    resource_id=f"e-{uuid.uuid4().hex}",  # one event per fact
                    version_id=1,
                    patient_id=patient,
                    detail="{}",
                )
                .returning(OutboxEvent.pk)
            ).scalar_one()
            pks.append(
                session.execute(
                    insert(Delivery)
                    .values(
                        partner_pk=partner_pk,
                        outbox_pk=outbox,
                        event_type="session.documented",
                        patient_id=patient,
                        status="pending",
                        attempts=0,
                        next_attempt_at=created,
                        created_at=created,
                    )
                    .returning(Delivery.pk)
                ).scalar_one()
            )
    return pks


def _row(runtime: Runtime, pk: int) -> Delivery:
    with read_session(runtime.sessions) as session:
        row = session.get(Delivery, pk)
        assert row is not None
        session.expunge(row)  # keep its loaded values past the read session's rollback
        return row


@pytest.fixture
def peer() -> Iterator[FhirPeer]:
    with fhir_peer() as p:
        yield p


def test_delivered_once(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    clock = Clock()
    worker = _worker(runtime, clock)
    assert worker.run_once() == 1
    assert worker.run_once() == 0
    assert peer.ids() == [f"urn:delivery:{pk}"]
    row = _row(runtime, pk)
    assert (row.status, row.attempts, row.last_status) == ("delivered", 1, 200)
    assert row.delivered_at == T0
    assert row.lease_until is None
    assert json.loads(row.payload or b"") == peer.received[0]


def test_retried_after_outage_with_backoff_same_bytes(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=10, backoff_cap=3600)
    peer.outage = True
    assert worker.run_once() == 1
    row = _row(runtime, pk)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, 503)
    assert row.last_error == "partner answered HTTP 503"
    assert T0 <= row.next_attempt_at <= T0 + timedelta(seconds=10)
    first_payload = row.payload

    peer.outage = False
    clock.now = row.next_attempt_at - timedelta(microseconds=1)
    if clock.now >= T0:
        assert worker.run_once() == 0  # not due yet
    clock.now = row.next_attempt_at
    assert worker.run_once() == 1
    row = _row(runtime, pk)
    assert (row.status, row.attempts, row.last_error, row.outcome) == ("delivered", 2, None, None)
    assert row.payload == first_payload
    assert peer.posts == [first_payload, first_payload]


def test_retry_after_honoured(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    peer.outage, peer.retry_after = True, "600"
    _worker(runtime, Clock()).run_once()
    assert _row(runtime, pk).next_attempt_at >= T0 + timedelta(seconds=600)


def test_dead_letter_on_400_with_outcome(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    peer.status_override = 400
    worker = _worker(runtime, Clock())
    assert worker.run_once() == 1
    row = _row(runtime, pk)
    assert (row.status, row.last_status, row.attempts) == ("dead", 400, 1)
    assert json.loads(row.outcome or "") == peer.outcome(400)
    assert worker.run_once() == 0
    assert peer.attempts == 1


def test_requeue_via_api(runtime: Runtime, peer: FhirPeer, client) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    peer.status_override = 422
    clock = Clock()
    worker = _worker(runtime, clock)
    worker.run_once()

    shown = client.get(f"/api/v1/deliveries/{pk}").get_json()
    assert shown["status"] == "dead"
    assert shown["first_failed_at"] == shown["last_attempt_at"] == "2026-12-01T09:00:00Z"
    assert shown["outcome"]["resourceType"] == "OperationOutcome"
    assert "payload" not in shown
    listed = client.get("/api/v1/deliveries?status=dead&partner=p1").get_json()
    assert [d["id"] for d in listed["deliveries"]] == [pk]
    assert "outcome" not in listed["deliveries"][0]

    peer.status_override = None
    answer = client.post(f"/api/v1/deliveries/{pk}/retry")
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "pending"
    assert answer.get_json()["first_failed_at"] is None
    assert client.post(f"/api/v1/deliveries/{pk}/retry").status_code == 409
    assert client.post("/api/v1/deliveries/999999/retry").status_code == 404

    clock.now = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)  # API: wall clock
    assert worker.run_once() == 1
    assert _row(runtime, pk).status == "delivered"


def test_api_filters_and_paging(runtime: Runtime, peer: FhirPeer, client) -> None:
    p1 = _partner(runtime, "p1", peer.base)
    p2 = _partner(runtime, "p2", peer.base)
    a = _deliveries(runtime, p1, ["pat-1", "pat-2", "pat-1"])
    b = _deliveries(runtime, p2, ["pat-1"])
    page = client.get("/api/v1/deliveries?_count=2").get_json()
    assert [d["id"] for d in page["deliveries"]] == [b[0], a[2]]
    rest = client.get(page["next"]).get_json()
    assert [d["id"] for d in rest["deliveries"]] == [a[1], a[0]]
    assert "next" not in rest
    pat = client.get("/api/v1/deliveries?patient=Patient/pat-1&partner=p1").get_json()
    assert [d["id"] for d in pat["deliveries"]] == [a[2], a[0]]
    later = client.get("/api/v1/deliveries?since=2026-12-02T00:00:00Z").get_json()
    assert later["deliveries"] == []
    assert client.get("/api/v1/deliveries?status=lost").status_code == 400
    assert client.get("/api/v1/deliveries?since=yesterday").status_code == 400
    assert client.get("/api/v1/deliveries?bogus=1").status_code == 400
    assert client.get("/api/v1/deliveries/abc").status_code == 404


def test_lease_expiry_lets_a_second_worker_take_the_row(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    with write_session(runtime.sessions) as session:  # worker A claims, then "crashes"
        assert queue.claim(session, worker_id="a", now=T0, lease_seconds=120, limit=10) == [pk]
    clock = Clock(T0 + timedelta(seconds=60))
    b = _worker(runtime, clock, "b")
    assert b.run_once() == 0
    clock.now = T0 + timedelta(seconds=120)
    assert b.run_once() == 1
    assert _row(runtime, pk).status == "delivered"
    # A comes back and records a stale result: fenced out by the lease
    with write_session(runtime.sessions) as session:
        stale = queue.lease_deadline(T0, 120)
        assert not queue.complete(session, pk, now=T0, status_code=200, lease=stale)


def test_recording_deliveries_together_fences_out_rows_whose_lease_was_lost(
    runtime: Runtime, peer: FhirPeer
) -> None:
    kept, lost, done = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["a", "b", "c"])
    with write_session(runtime.sessions) as session:
        claimed = queue.claim(session, worker_id="a", now=T0, lease_seconds=120, limit=10)
    assert sorted(claimed) == sorted([kept, lost, done])
    lease = queue.lease_deadline(T0, 120)
    with write_session(runtime.sessions) as session:  # another worker took one, one is done
        session.execute(update(Delivery).where(Delivery.pk == lost).values(lease_until=T0))
        session.execute(update(Delivery).where(Delivery.pk == done).values(status="delivered"))
    at = T0 + timedelta(seconds=5)
    with write_session(runtime.sessions) as session:
        results = [(kept, at, 201), (lost, at, 200), (done, at, 200)]
        assert queue.complete_many(session, results, lease=lease) == {lost, done}
    row = _row(runtime, kept)
    assert (row.status, row.attempts, row.last_status, row.lease_until) == (
        "delivered",
        1,
        201,
        None,
    )
    assert row.delivered_at == at
    assert (_row(runtime, lost).status, _row(runtime, lost).attempts) == ("pending", 0)
    assert _row(runtime, done).attempts == 0


def test_order_per_patient_kept(runtime: Runtime, peer: FhirPeer) -> None:
    partner = _partner(runtime, "p1", peer.base)
    pks = _deliveries(runtime, partner, ["A", "B", "A", "A", "B", None, None])
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=1, backoff_cap=1)
    peer.outage = True
    worker.run_once()  # the first row fails; the partner's other rows are given back
    peer.outage = False
    first = _row(runtime, pks[0])
    assert (first.status, first.attempts) == ("pending", 1)
    # while A's first event waits for its retry, A's later events wait too
    for _ in range(6):
        worker.run_once()
    sent = [int(u.rsplit(":", 1)[1]) for u in peer.ids()]
    assert pks[2] not in sent
    assert pks[3] not in sent
    clock.advance(seconds=2)
    for _ in range(6):
        worker.run_once()
    sent = [int(u.rsplit(":", 1)[1]) for u in peer.ids()]
    assert sorted(sent) == sorted(pks)
    for patient_rows in ([pks[0], pks[2], pks[3]], [pks[1], pks[4]]):
        assert [pk for pk in sent if pk in patient_rows] == patient_rows


def test_run_forever_builds_the_next_batch_while_one_is_sent_and_keeps_patient_order(
    runtime: Runtime, peer: FhirPeer
) -> None:
    patients = ["A", "B", "A", "A", "B", "C", "A", "B", "C", "A"]
    pks = _deliveries(runtime, _partner(runtime, "p1", peer.base), patients)
    peer.delay = 0.05
    built_while_sending: list[int] = []

    def build(session: Session, job: queue.Job) -> dict[str, Any]:
        with peer.lock:
            if peer.in_flight:
                built_while_sending.append(job.pk)
        return _build(session, job)

    stop = threading.Event()
    worker = _worker(runtime, Clock(), batch=2, idle_seconds=0.01, build=build)
    worker.sleep = stop.wait
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    try:
        for _ in range(400):
            if all(_row(runtime, pk).status == "delivered" for pk in pks):
                break
            time.sleep(0.025)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    sent = [int(u.rsplit(":", 1)[1]) for u in peer.ids()]
    assert sorted(sent) == sorted(pks)  # each once
    for patient in "ABC":
        rows = [pk for pk, p in zip(pks, patients, strict=True) if p == patient]
        assert [pk for pk in sent if pk in rows] == rows
    assert built_while_sending  # the next batch was prepared during a send


def test_one_event_for_two_partners_is_built_once_and_both_get_the_same_bytes(
    runtime: Runtime,
) -> None:
    with fhir_peer() as physician, fhir_peer() as payer:
        (first,) = _deliveries(runtime, _partner(runtime, "doc", physician.base), ["pat-1"])
        payer_pk = _partner(runtime, "payer", payer.base)
        with write_session(runtime.sessions) as session:
            row = session.get(Delivery, first)
            assert row is not None
            second = session.execute(
                insert(Delivery)
                .values(
                    partner_pk=payer_pk,
                    outbox_pk=row.outbox_pk,
                    event_type=row.event_type,
                    patient_id=row.patient_id,
                    status="pending",
                    attempts=0,
                    next_attempt_at=T0,
                    created_at=T0,
                )
                .returning(Delivery.pk)
            ).scalar_one()
        builds: list[int] = []

        def build(session: Session, job: queue.Job) -> dict[str, Any]:
            builds.append(job.pk)
            return _build(session, job)

        assert _worker(runtime, Clock(), build=build).run_once() == 2
        assert len(builds) == 1
        assert physician.posts == payer.posts
        assert _row(runtime, first).payload == _row(runtime, second).payload


def test_a_failing_batch_build_falls_back_to_building_row_by_row(
    runtime: Runtime, peer: FhirPeer
) -> None:
    from sqlalchemy import text

    pks = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["a", "b"])

    def build_many(session: Session, outbox_pks: Any) -> dict[int, Any]:
        session.execute(text("SELECT * FROM no_such_table"))  # fails inside the transaction
        raise AssertionError("unreachable")

    worker = _worker(runtime, Clock(), build_many=build_many)
    assert worker.run_once() == 2
    assert [_row(runtime, pk).status for pk in pks] == ["delivered", "delivered"]
    assert sorted(peer.ids()) == sorted(f"urn:delivery:{pk}" for pk in pks)


def test_dead_partner_does_not_starve_a_live_one(runtime: Runtime) -> None:
    with fhir_peer() as down, fhir_peer() as up:
        down.outage = True
        dead_pk = _partner(runtime, "down", down.base)
        live_pk = _partner(runtime, "up", up.base)
        _deliveries(runtime, dead_pk, [f"p{i}" for i in range(30)])
        live = _deliveries(runtime, live_pk, ["x", "y", "z"])
        worker = _worker(runtime, Clock(), batch=6, per_partner=3)  # 3 + 3, round-robin
        worker.run_once()
        assert sorted(int(u.rsplit(":", 1)[1]) for u in up.ids()) == live
        assert down.attempts == 1  # the rest of its rows were given back, not hammered


def test_gives_up_72_hours_after_the_first_failure(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=1, backoff_cap=1)
    peer.outage = True
    assert worker.run_once() == 1
    assert _row(runtime, pk).first_failed_at == T0
    clock.advance(hours=1)
    assert worker.run_once() == 1
    assert _row(runtime, pk).first_failed_at == T0  # the clock does not restart
    clock.now = T0 + timedelta(hours=72) - timedelta(seconds=1)
    assert worker.run_once() == 1
    row = _row(runtime, pk)
    assert (row.status, row.attempts) == ("pending", 3)
    clock.now = T0 + timedelta(hours=72)
    assert worker.run_once() == 1
    row = _row(runtime, pk)
    assert (row.status, row.attempts, row.last_status) == ("dead", 4, 503)
    assert (row.last_error or "").startswith("gave up after 3 days")
    assert row.first_failed_at == T0


def test_backlog_behind_an_outage_does_not_expire_early(runtime: Runtime, peer: FhirPeer) -> None:
    created = T0 - timedelta(hours=100)  # queued long ago, never tried (partner disabled, ...)
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"], created=created)
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=1, backoff_cap=1)
    peer.outage = True
    worker.run_once()
    row = _row(runtime, pk)
    assert (row.status, row.first_failed_at) == ("pending", T0)
    clock.advance(hours=71)
    worker.run_once()
    assert _row(runtime, pk).status == "pending"
    peer.outage = False
    clock.advance(seconds=2)
    worker.run_once()
    row = _row(runtime, pk)
    assert (row.status, row.attempts, row.first_failed_at) == ("delivered", 3, T0)


def test_give_up_setting_and_requeue_restarts_the_clock(runtime: Runtime, peer: FhirPeer) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    clock = Clock()
    worker = _worker(runtime, clock, backoff_base=1, backoff_cap=1, max_age=timedelta(hours=2))
    peer.outage = True
    worker.run_once()
    clock.advance(hours=2)
    worker.run_once()
    assert _row(runtime, pk).status == "dead"
    with write_session(runtime.sessions) as session:
        assert queue.requeue(session, pk, now=clock.now)
    row = _row(runtime, pk)
    assert (row.status, row.attempts, row.first_failed_at) == ("pending", 0, None)
    requeued_at = clock.now
    worker.run_once()
    assert _row(runtime, pk).first_failed_at == requeued_at
    clock.advance(hours=1)
    worker.run_once()
    assert _row(runtime, pk).status == "pending"  # 1 h since the new first failure
    with write_session(runtime.sessions) as session:  # the dead-letter bulk requeue clears it too
        session.execute(update(Delivery).where(Delivery.pk == pk).values(status="dead"))
        assert queue.requeue_dead(session, now=clock.now) == 1
    assert _row(runtime, pk).first_failed_at is None


def test_a_first_attempt_that_succeeds_leaves_no_failure_clock(
    runtime: Runtime, peer: FhirPeer
) -> None:
    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    _worker(runtime, Clock()).run_once()
    row = _row(runtime, pk)
    assert (row.status, row.first_failed_at) == ("delivered", None)


def test_alert_once_per_incident(
    runtime: Runtime, peer: FhirPeer, caplog: pytest.LogCaptureFixture
) -> None:
    partner = _partner(runtime, "p1", peer.base)
    clock = Clock()
    with fhir_peer() as hook:
        worker = _worker(runtime, clock, alert_webhook=hook.base, alert_after=3)

        def failing_alerts() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage() == "partner p1 failing"]

        with caplog.at_level(logging.INFO, logger="fhir_bridge"):
            _deliveries(runtime, partner, ["a"])
            worker.run_once()  # a success: the partner is healthy
            peer.status_override = 400
            _deliveries(runtime, partner, ["b", "c", "d"])
            for _ in range(3):
                worker.run_once()
            assert len(failing_alerts()) == 1  # first failure after a success; once
            assert hook.attempts == 1
            alert = json.loads(hook.posts[0])
            assert alert["event"] == "partner.failing"
            assert alert["partner"] == "p1"
            assert alert["last_status"] == 400
            assert "b" not in json.dumps(alert["last_error"])  # no patient ids

            peer.status_override = None
            _deliveries(runtime, partner, ["e"])
            worker.run_once()  # recovered: the incident is over
            peer.status_override = 400
            _deliveries(runtime, partner, ["f"])
            worker.run_once()
            assert len(failing_alerts()) == 2
            assert failing_alerts()[0].levelno == logging.ERROR


def test_alert_after_n_failures_without_a_success(runtime: Runtime, peer: FhirPeer) -> None:
    partner = _partner(runtime, "p1", peer.base)
    peer.status_override = 400
    with fhir_peer() as hook:
        worker = _worker(runtime, Clock(), alert_webhook=hook.base, alert_after=2)
        _deliveries(runtime, partner, ["a", "b", "c"])
        worker.run_once()  # three dead letters in one batch
        assert hook.attempts == 1


@pytest.mark.postgres
def test_two_workers_on_postgres_never_send_a_row_twice(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite runs one worker")
    with fhir_peer() as peer:
        peer.delay = 0.005
        partners = [_partner(runtime, f"p{i}", peer.base) for i in range(3)]
        pks: list[int] = []
        for p in partners:
            pks += _deliveries(runtime, p, [f"pat-{i % 7}" for i in range(20)] + [None] * 5)
        clock = Clock()
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def drain(name: str) -> None:
            worker = _worker(runtime, clock, name, batch=10)
            try:
                barrier.wait()
                idle = 0
                while idle < 3:
                    idle = idle + 1 if worker.run_once() == 0 else 0
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(n,)) for n in ("w1", "w2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        sent = [int(u.rsplit(":", 1)[1]) for u in peer.ids()]
        assert sorted(sent) == sorted(pks)  # every row, each exactly once
        with read_session(runtime.sessions) as session:
            statuses = set(session.execute(select(Delivery.status)).scalars())
        assert statuses == {"delivered"}


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_are_disjoint(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    partner = _partner(runtime, "p1", "http://127.0.0.1:9/fhir")
    _deliveries(runtime, partner, [f"pat-{i}" for i in range(40)])
    barrier = threading.Barrier(4)
    claimed: list[list[int]] = []

    def take(name: str) -> None:
        barrier.wait()
        with write_session(runtime.sessions) as session:
            claimed.append(
                queue.claim(
                    session, worker_id=name, now=T0, lease_seconds=60, limit=40, per_partner=40
                )
            )

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    flat = [pk for batch in claimed for pk in batch]
    assert len(flat) == len(set(flat)) == 40


def _cli_env(runtime: Runtime) -> dict[str, str]:
    return {
        "FHIR_BRIDGE_DATABASE_URL": runtime.settings.database_url,
        "FHIR_BRIDGE_TESTING": "true",
        "FHIR_BRIDGE_LOG_JSON": "false",
    }


def test_cli_retry_dead(runtime: Runtime, peer: FhirPeer) -> None:
    from click.testing import CliRunner

    from fhir_bridge.cli import main

    p1 = _partner(runtime, "p1", peer.base)
    p2 = _partner(runtime, "p2", peer.base)
    a, b = _deliveries(runtime, p1, ["x"]) + _deliveries(runtime, p2, ["y"])
    peer.status_override = 400
    _worker(runtime, Clock()).run_once()
    assert _row(runtime, a).status == _row(runtime, b).status == "dead"

    runner = CliRunner()
    env = _cli_env(runtime)
    assert runner.invoke(main, ["deliveries", "retry"], env=env).exit_code == 2
    unknown = runner.invoke(main, ["deliveries", "retry", "--dead", "--partner", "nope"], env=env)
    assert unknown.exit_code == 1
    assert "no partner with key 'nope'" in unknown.output
    one = runner.invoke(main, ["deliveries", "retry", "--dead", "--partner", "p1"], env=env)
    assert one.exit_code == 0, one.output
    assert "1 dead deliveries requeued" in one.output
    assert (_row(runtime, a).status, _row(runtime, a).attempts) == ("pending", 0)
    assert _row(runtime, b).status == "dead"
    rest = runner.invoke(main, ["deliveries", "retry", "--dead"], env=env)
    assert "1 dead deliveries requeued" in rest.output


def test_cli_refuses_a_second_worker_on_sqlite(runtime: Runtime) -> None:
    from click.testing import CliRunner

    from fhir_bridge.cli import main
    from fhir_bridge.commands.deliveries import single_worker

    if not runtime.settings.is_sqlite:
        pytest.skip("the single-worker rule is SQLite's")
    with single_worker(runtime.settings.database_url):
        result = CliRunner().invoke(main, ["worker", "--once"], env=_cli_env(runtime))
    assert result.exit_code == 1
    assert "another delivery worker is already running" in result.output


def test_cli_worker_settings_from_env_overridden_by_options(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from fhir_bridge.cli import main

    seen: dict[str, Any] = {}

    def record(self: Worker) -> int:
        config = self.config
        seen.update(
            batch=config.batch,
            lease=config.lease_seconds,
            base=config.retry.base,
            cap=config.retry.cap,
            max_age=config.retry.max_age,
            idle=config.idle_seconds,
            timeout=config.timeout,
            hook=config.alert_webhook,
        )
        return 0

    monkeypatch.setattr(Worker, "run_once", record)
    env = {
        **_cli_env(runtime),
        "FHIR_BRIDGE_DELIVERY_BATCH_SIZE": "40",
        "FHIR_BRIDGE_DELIVERY_BACKOFF_BASE_SECONDS": "2",
        "FHIR_BRIDGE_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/env",
    }
    args = ["worker", "--once", "--batch-size", "7", "--give-up-hours", "1", "--timeout", "3"]
    args += ["--alert-webhook", "http://127.0.0.1:9/cli", "--idle-seconds", "0.5"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert seen == {
        "batch": 7,
        "lease": 120,
        "base": 2,
        "cap": 3600,
        "max_age": timedelta(hours=1),
        "idle": 0.5,
        "timeout": 3,
        "hook": "http://127.0.0.1:9/cli",
    }
    bad_env = CliRunner().invoke(
        main, ["worker", "--once"], env={**env, "FHIR_BRIDGE_DELIVERY_LEASE_SECONDS": "soon"}
    )
    assert bad_env.exit_code == 1
    assert "FHIR_BRIDGE_DELIVERY_LEASE_SECONDS: expected a number" in bad_env.output
    bad_option = CliRunner().invoke(main, ["worker", "--once", "--backoff-cap", "1"], env=env)
    assert bad_option.exit_code == 1
    assert "FHIR_BRIDGE_DELIVERY_BACKOFF_CAP_SECONDS: must not be below" in bad_option.output


def test_a_payload_that_cannot_be_built_does_not_stop_the_batch(
    runtime: Runtime, peer: FhirPeer
) -> None:
    from sqlalchemy import text

    pks = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["a", "b", "c"])

    def build(session: Session, job: queue.Job) -> dict[str, Any]:
        if job.pk == pks[0]:
            session.execute(text("SELECT * FROM no_such_table"))  # fails inside the transaction
        return _build(session, job)

    worker = _worker(runtime, Clock())
    worker.build = build
    assert worker.run_once() == 2
    broken = _row(runtime, pks[0])
    assert (broken.status, broken.attempts, broken.payload) == ("pending", 1, None)
    assert (broken.last_error or "").startswith("payload could not be built (")
    assert broken.first_failed_at == T0
    assert [_row(runtime, pk).status for pk in pks[1:]] == ["delivered", "delivered"]
    assert sorted(peer.ids()) == sorted(f"urn:delivery:{pk}" for pk in pks[1:])


def test_the_payload_is_shown_only_to_admins_and_each_view_is_audited(
    runtime: Runtime, peer: FhirPeer, app
) -> None:
    from tests.support.tokens import bearer

    (pk,) = _deliveries(runtime, _partner(runtime, "p1", peer.base), ["pat-1"])
    client = app.test_client()
    assert client.get(f"/api/v1/deliveries/{pk}/payload").status_code == 404  # not sent yet
    _worker(runtime, Clock()).run_once()
    clinic = client.get(f"/api/v1/deliveries/{pk}/payload", headers=bearer(app, role="clinic"))
    assert clinic.status_code == 403
    assert clinic.get_json()["issue"][0]["expression"] == ["http.Authorization"]
    shown = client.get(f"/api/v1/deliveries/{pk}/payload")  # the admin test client
    assert shown.status_code == 200
    assert shown.mimetype == "application/fhir+json"
    assert json.loads(shown.data) == peer.received[0]
    events = client.get("/fhir/AuditEvent").get_json().get("entry", [])
    paths = [
        base64.b64decode(e["resource"]["entity"][0]["query"]).decode()
        for e in events
        if e["resource"].get("entity")
    ]
    assert paths.count(f"/api/v1/deliveries/{pk}/payload") == 3  # 404, 403 and 200 alike
