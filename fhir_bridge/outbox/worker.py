"""The delivery worker: route outbox events, claim due deliveries, send them, record results.

One cycle (``run_once``): ``route_pending`` turns new outbox events into delivery rows; a claim
leases up to ``batch`` due rows (fair over partners, oldest-first per patient: see
``outbox.queue``); each row's Bundle is built once and stored before it is first sent
(retries resend those bytes), POSTed with the partner's auth, and the result recorded. The
database work is per batch: one claim, one read of the rows, one read transaction building the
missing Bundles and one write storing them, one write recording every result.

* 2xx: delivered. Any other 4xx (and a 401 a fresh token did not cure): a dead letter with the
  partner's OperationOutcome kept.
* Retryable (network, 408/425/429/5xx, no token): what happens next is the pure
  ``outbox.retry.RetryPolicy``'s decision (backoff with full jitter, ``Retry-After`` honoured,
  a dead letter ``max_age`` after the row's first failed attempt, ``first_failed_at``, set by
  the queue on the first failure and cleared by a requeue).
* A crash before the batch's results are recorded records nothing: the leases expire and
  another worker (or this one) sends the same stored bytes again. Delivery is at least once;
  partners' conditional creates make it effectively once.

After a retryable failure, the partner's remaining rows in the batch are given back unsent (a
down partner costs one timeout per cycle, not one per row); when the lease is about to run
out, the rest of the batch is given back too.

``run_forever`` prepares the next batch (route, claim, build) while a sending thread delivers
the current one, so a partner's answer time overlaps the bridge's own work.

Alerts, once per incident and per worker process, come from ``exchange.partner_health``.

This module is the loop only: one frozen ``WorkerConfig`` configures it, and what routes events
and builds Bundles is injected (``outbox.pipeline.make_worker`` wires ``outbox.routing`` and
``outbox.payload``), so it imports neither, nor any service.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import requests
from sqlalchemy.orm import Session, sessionmaker

from fhir_bridge.exchange.auth import PartnerAuth, partner_auth
from fhir_bridge.exchange.partner_health import PartnerHealth
from fhir_bridge.exchange.sender import SendResult, send_parts
from fhir_bridge.fhir import jsonio
from fhir_bridge.mapping.delivery_split import shape_payload
from fhir_bridge.outbox import queue
from fhir_bridge.outbox.queue import DEAD, DELIVERED
from fhir_bridge.outbox.retry import Attempt as RetryAttempt
from fhir_bridge.outbox.retry import Delivered, GiveUp, Retry, RetryPolicy
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.delivery_attempts import Attempt, log_attempts
from fhir_bridge.store.partners import PartnerRow, PartnerStore

if TYPE_CHECKING:
    from fhir_bridge.settings import Settings

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Sessions(Protocol):
    """What the worker needs of the runtime: the session factory (the runtime is also handed,
    as is, to the injected router)."""

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The database's session factory."""
        ...


Clock = Callable[[], datetime]
#: (runtime) -> number of delivery rows routed
Router = Callable[[Any], int]
#: (session, claimed row) -> the transaction Bundle to send. It depends on the row's outbox
#: event only (not on the partner): rows of one event in a batch share one build.
PayloadBuilder = Callable[[Session, queue.Job], dict[str, Any]]
#: (session, outbox event pks) -> each event's Bundle, or the exception that stopped it
BatchBuilder = Callable[[Session, Sequence[int]], Mapping[int, "dict[str, Any] | Exception"]]
AuthFactory = Callable[[PartnerRow, requests.Session], PartnerAuth]

#: the GIL switch interval while ``run_forever`` runs (Python's default: 5 ms)
SEND_SWITCH_INTERVAL = 0.0005


def default_auth(partner: PartnerRow, http: requests.Session) -> PartnerAuth:
    """``partner_auth`` for the partner, sharing the worker's HTTP session."""
    return partner_auth(partner.auth_kind, partner.auth, session=http)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything that configures a worker (its collaborators are passed apart).

    ``per_partner``: at most this many rows of one partner per claim (default: the whole
    batch; a claim fills it round-robin over partners). ``retry``: backoff and give-up.
    """

    worker_id: str
    batch: int = 20
    lease_seconds: float = 120
    per_partner: int | None = None
    timeout: float = 10.0
    idle_seconds: float = 5.0
    alert_webhook: str | None = None
    alert_after: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_settings(cls, settings: Settings, *, worker_id: str, **overrides: Any) -> WorkerConfig:
        """Backoff, give-up, lease, batch, idle pause, timeout and alert webhook from
        ``settings``; ``overrides`` (fields of this class) win."""
        config = cls(
            worker_id=worker_id,
            batch=settings.delivery_batch_size,
            lease_seconds=settings.delivery_lease_seconds,
            timeout=settings.delivery_timeout_seconds,
            idle_seconds=settings.worker_idle_seconds,
            alert_webhook=settings.alert_webhook_url or None,
            retry=RetryPolicy(
                base=settings.delivery_backoff_base_seconds,
                cap=settings.delivery_backoff_cap_seconds,
                max_age=timedelta(hours=settings.delivery_give_up_hours),
            ),
        )
        return replace(config, **overrides)


@dataclass(frozen=True)
class _Batch:
    """A claimed batch, ready to send: rows in claim order, their partners and Bundles."""

    pks: list[int]
    lease: datetime
    partners: dict[int, PartnerRow]
    #: the rows whose partner is on file and enabled (the others are given back)
    sendable: dict[int, queue.Job]
    payloads: dict[int, bytes]
    #: rows whose Bundle could not be built: the error type
    broken: dict[int, str]


class Worker:
    """Sends deliveries; see the module docstring. One instance per thread or process."""

    def __init__(
        self,
        runtime: Sessions,
        config: WorkerConfig,
        *,
        route: Router,
        build: PayloadBuilder,
        build_many: BatchBuilder | None = None,
        clock: Clock,
        sleep: Callable[[float], object],
        http: requests.Session | None = None,
        auth_factory: AuthFactory | None = None,
    ) -> None:
        """``route(runtime)`` turns new outbox events into deliveries; ``build_many`` builds a
        batch's Bundles at once (``build``, one row's, when it fails or is not given).
        ``clock`` returns naive UTC; ``sleep`` waits between idle cycles (pass
        ``stop_event.wait`` to stop promptly). ``outbox.pipeline.worker`` wires the defaults.
        """
        self.runtime = runtime
        self.config = config
        self.worker_id = config.worker_id
        self.clock = clock
        self.sleep = sleep
        self.http = http or requests.Session()
        self.route = route
        self.build = build
        self.build_many = build_many
        self.auth_factory = auth_factory or default_auth
        self._auth: dict[tuple[int, datetime], PartnerAuth] = {}
        self.health = PartnerHealth(
            worker_id=config.worker_id,
            clock=clock,
            http=self.http,
            webhook=config.alert_webhook,
            alert_after=config.alert_after,
        )

    # -- the cycle -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Route, claim and send one batch; the number of deliveries attempted.

        Database work is per batch, not per row: one claim, one read of the rows and their
        partners, one write storing the payloads built for rows sent for the first time, and
        one write recording every result (and giving back the rows not sent).
        """
        batch = self._prepare()
        return 0 if batch is None else self._deliver(batch)

    def run_forever(self, stop_event: threading.Event) -> None:
        """Cycle until ``stop_event`` is set, sleeping ``idle_seconds`` when there was no work.

        The next batch is routed, claimed and built while the current one is being sent (one
        sending thread): a partner's answer time then overlaps the bridge's own work instead
        of adding to it. Order per patient holds: a row in flight is still pending under its
        lease, which holds back the patient's later rows from the next claim.

        A failing cycle (database down ...) is logged by type only and retried after the
        idle pause: exception texts may quote row values.
        """
        log.info("delivery worker started", extra={"worker": self.worker_id})
        # The sending thread mostly waits on the partner; when an answer arrives it must get
        # the GIL back from the building thread soon, not after the default 5 ms slice.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SEND_SWITCH_INTERVAL)
        try:
            self._pipeline(stop_event)
        finally:
            sys.setswitchinterval(switch_interval)
        log.info("delivery worker stopped", extra={"worker": self.worker_id})

    def _pipeline(self, stop_event: threading.Event) -> None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-send") as sender:
            in_flight: Future[int] | None = None
            while not stop_event.is_set():
                batch = self._guarded(self._prepare)
                attempted = self._guarded(in_flight.result) if in_flight else 0
                in_flight = sender.submit(self._deliver, batch) if batch else None
                if batch is None and not attempted and not stop_event.is_set():
                    self.sleep(self.config.idle_seconds)
            if in_flight is not None:
                self._guarded(in_flight.result)

    def _guarded(self, step: Callable[[], _T]) -> _T | None:
        """``step()``, or None after logging a failure by type (see ``run_forever``)."""
        try:
            return step()
        except Exception as exc:
            log.error(
                "delivery cycle failed",
                extra={"worker": self.worker_id, "error_type": type(exc).__name__},
            )
            return None

    def _prepare(self) -> _Batch | None:
        """Route, claim a batch and make sure every row has its stored Bundle."""
        self.route(self.runtime)
        now = self.clock()
        with write_session(self.runtime.sessions) as session:
            pks = queue.claim(
                session,
                worker_id=self.worker_id,
                now=now,
                lease_seconds=self.config.lease_seconds,
                limit=self.config.batch,
                per_partner=self.config.per_partner or self.config.batch,
            )
        if not pks:
            return None
        with read_session(self.runtime.sessions) as session:
            jobs = queue.jobs(session, pks)
            store = PartnerStore(session)
            partners = {
                pk: row
                for pk in {j.partner_pk for j in jobs.values()}
                if (row := store.by_pk(pk)) is not None
            }
        sendable = {
            pk: job
            for pk, job in jobs.items()
            if (p := partners.get(job.partner_pk)) is not None and p.enabled
        }
        payloads, broken = self._payloads(list(sendable.values()))
        return _Batch(
            pks=pks,
            lease=queue.lease_deadline(now, self.config.lease_seconds),
            partners=partners,
            sendable=sendable,
            payloads=payloads,
            broken=broken,
        )

    def _deliver(self, batch: _Batch) -> int:
        """Send a prepared batch in claim order and record the results; how many were tried."""
        # a send may take two timeouts (401 then retry) plus a token request
        margin = timedelta(seconds=3 * self.config.timeout)
        attempted = 0
        unsent: list[int] = []
        failing: set[int] = set()
        results: list[tuple[queue.Job, SendResult, datetime]] = []
        began: dict[int, datetime] = {}  # when each attempt started, by row
        for index, pk in enumerate(batch.pks):
            if self.clock() + margin >= batch.lease:
                unsent.extend(batch.pks[index:])
                break
            job = batch.sendable.get(pk)
            if job is None or job.partner_pk in failing:
                unsent.append(pk)
                continue
            if pk in batch.broken:
                # not the partner's fault: no alert; retried with backoff like a failure
                error = f"payload could not be built ({batch.broken[pk]})"
                results.append((job, SendResult("retry", error=error), self.clock()))
                continue
            partner = batch.partners[job.partner_pk]
            began[pk] = self.clock()
            result = self._send(partner, batch.payloads[pk], delivery=pk)
            results.append((job, result, self.clock()))
            self.health.record(partner, result)
            attempted += 1
            if result.outcome == "retry":
                failing.add(job.partner_pk)
        self._record_all(results, unsent, batch.lease, began)
        return attempted

    # -- one delivery ----------------------------------------------------------------------

    def _payloads(self, jobs: Sequence[queue.Job]) -> tuple[dict[int, bytes], dict[int, str]]:
        """Every job's Bundle: stored ones as they are; the others built in one read
        transaction and stored in one write (the first stored payload of a row wins).
        Returns the payloads and, for rows whose Bundle could not be built, the error type.
        """
        payloads = {job.pk: job.payload for job in jobs if job.payload is not None}
        missing = [job for job in jobs if job.payload is None]
        built: dict[int, bytes] = {}
        broken: dict[int, str] = {}
        if not missing:
            return payloads, broken
        firsts: dict[int, queue.Job] = {}  # one row per event
        for job in missing:
            firsts.setdefault(job.outbox_pk, job)
        with read_session(self.runtime.sessions) as session:
            bundles = self._build_batch(session, list(firsts.values()))
        for job in missing:  # a visit going to a physician and a payer: built once
            result = bundles[job.outbox_pk]
            if isinstance(result, Exception):
                log.error(
                    "delivery payload could not be built",
                    extra={"delivery": job.pk, "error_type": type(result).__name__},
                )
                broken[job.pk] = type(result).__name__
            else:
                built[job.pk] = result
        if built:
            with write_session(self.runtime.sessions) as session:
                built = queue.store_payloads(session, built)
        return {**payloads, **built}, broken

    def _build_batch(
        self, session: Session, jobs: Sequence[queue.Job]
    ) -> dict[int, bytes | Exception]:
        """Each job's event's Bundle as bytes, or the exception that stopped it: all at once
        when there is a batch builder (row by row if it fails), else row by row."""
        if self.build_many is not None:
            try:
                many = self.build_many(session, [job.outbox_pk for job in jobs])
                return {
                    pk: result if isinstance(result, Exception) else jsonio.dumps(result)
                    for pk, result in many.items()
                }
            except Exception as exc:
                session.rollback()
                log.warning(
                    "building a batch of payloads failed; building them one by one",
                    extra={"error_type": type(exc).__name__, "worker": self.worker_id},
                )
        out: dict[int, bytes | Exception] = {}
        for job in jobs:
            try:
                out[job.outbox_pk] = jsonio.dumps(self.build(session, job))
            except Exception as exc:
                session.rollback()  # a failed statement must not poison the next build
                out[job.outbox_pk] = exc
        return out

    def _send(self, partner: PartnerRow, payload: bytes, *, delivery: int) -> SendResult:
        """POST one payload, in the partner's shape (one or more ordered Bundles, transaction
        or batch), with the partner's auth (logged with the partner and delivery)."""
        try:
            auth = self._auth_for(partner)
        except Exception as exc:
            # AuthConfigError, SecretUnavailable: the partner's auth settings are unusable
            return SendResult("retry", error=f"partner auth not usable ({type(exc).__name__})")
        try:
            parts = shape_payload(
                payload, max_entries=partner.max_bundle_entries, bundle_type=partner.bundle_type
            )
        except ValueError as exc:  # SplitError, JsonError: the stored Bundle cannot be cut
            error = f"payload could not be shaped for the partner ({type(exc).__name__})"
            return SendResult("dead", error=error)
        return send_parts(
            partner.base_url,
            parts,
            bundle_type=partner.bundle_type,
            auth=auth,
            session=self.http,
            timeout=self.config.timeout,
            now=self.clock(),
            log_context={"partner": partner.key, "delivery": delivery, "worker": self.worker_id},
        )

    def _auth_for(self, partner: PartnerRow) -> PartnerAuth:
        key = (partner.pk, partner.updated_at)
        if key not in self._auth:
            for old in [k for k in self._auth if k[0] == partner.pk]:
                del self._auth[old]
            self._auth[key] = self.auth_factory(partner, self.http)
        return self._auth[key]

    def _record_all(
        self,
        results: Sequence[tuple[queue.Job, SendResult, datetime]],
        unsent: Sequence[int],
        lease: datetime,
        began: Mapping[int, datetime] | None = None,
    ) -> None:
        """Record every result (each at the time it came) and give back the unsent rows, in
        one transaction (the deliveries in one executemany). A crash before it records
        nothing: the rows are sent again."""
        if not results and not unsent:
            return
        decisions = {job.pk: self._decide(job, r, at) for job, r, at in results}
        with write_session(self.runtime.sessions) as session:
            began = began or {}
            log_attempts(
                session,
                [
                    self._attempt(job, r, began.get(job.pk, at), decisions[job.pk])
                    for job, r, at in results
                ],
            )
            delivered = [(j, r, at) for j, r, at in results if r.outcome == "delivered"]
            not_ours = queue.complete_many(
                session, [(j.pk, at, r.status) for j, r, at in delivered], lease=lease
            )
            lost = [(j, r) for j, r, _ in delivered if j.pk in not_ours]
            lost += [
                (job, result)
                for job, result, at in results
                if result.outcome != "delivered"
                and not self._record(session, job, result, decisions[job.pk], at, lease)
            ]
            if unsent:
                queue.release(session, unsent, lease=lease)
        for job, result in lost:
            log.warning(
                "delivery lease lost before the result was recorded",
                extra={"delivery": job.pk, "worker": self.worker_id, "outcome": result.outcome},
            )

    def _decide(
        self, job: queue.Job, result: SendResult, now: datetime
    ) -> Delivered | Retry | GiveUp:
        """The retry policy's decision on one result (attempt number and first failure from
        the row)."""
        attempt = RetryAttempt(number=job.attempts + 1, first_failed_at=job.first_failed_at)
        return self.config.retry.decide(attempt, result, now)

    def _attempt(
        self,
        job: queue.Job,
        result: SendResult,
        began: datetime,
        decision: Delivered | Retry | GiveUp,
    ) -> Attempt:
        """The history row of one attempt (kept even when the row's lease was lost: the
        partner got the Bundle all the same); ``began`` by the worker's clock."""
        verdict = {Delivered: DELIVERED, Retry: "retry", GiveUp: DEAD}[type(decision)]
        return Attempt(
            delivery_pk=job.pk,
            attempted_at=began,
            duration_ms=result.elapsed_ms,
            result=verdict,
            http_status=result.status,
            error=result.error,
            outcome=result.outcome_body,
            worker=self.worker_id,
        )

    def _record(
        self,
        session: Session,
        job: queue.Job,
        result: SendResult,
        decision: Delivered | Retry | GiveUp,
        now: datetime,
        lease: datetime,
    ) -> bool:
        """Record one failed attempt as decided; False when the row is no longer ours (its
        lease was lost). Deliveries are recorded together by ``queue.complete_many``."""
        if isinstance(decision, Retry):
            return queue.retry_later(
                session,
                job.pk,
                now=now,
                next_at=decision.at,
                status_code=result.status,
                error=result.error,
                outcome=result.outcome_body,
                lease=lease,
            )
        reason = decision.reason if isinstance(decision, GiveUp) else result.error
        return queue.dead(
            session,
            job.pk,
            now=now,
            status_code=result.status,
            error=reason,
            outcome=result.outcome_body,
            lease=lease,
        )
