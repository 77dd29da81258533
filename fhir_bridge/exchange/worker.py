"""The delivery worker: route outbox events, claim due deliveries, send them, record results.

One cycle (``run_once``): ``route_pending`` turns new outbox events into delivery rows; a claim
leases up to ``batch`` due rows (fair over partners, oldest-first per patient: see
``store.delivery_queue``); each row's Bundle is built once and stored (retries resend those
bytes), POSTed with the partner's auth, and the result recorded:

* 2xx: delivered. Any other 4xx (and a 401 a fresh token did not cure): a dead letter with the
  partner's OperationOutcome kept.
* Retryable (network, 408/425/429/5xx, no token): retried after exponential backoff with full
  jitter, never sooner than a ``Retry-After`` asks; once a row has failed for ``max_age``
  (72 h) it becomes a dead letter instead.
* A crash mid-send records nothing: the lease expires and another worker (or this one) sends
  the same stored bytes again. Delivery is at least once; partners' conditional creates make
  it effectively once.

After a retryable failure, the partner's remaining rows in the batch are given back unsent (a
down partner costs one timeout per cycle, not one per row); when the lease is about to run
out, the rest of the batch is given back too.

Partner health alerts live in this process's memory (each worker process alerts on its own;
a restart forgets, so a partner still failing alerts again after ``alert_after`` failures).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
from sqlalchemy.orm import Session

from fhir_bridge.exchange import backoff
from fhir_bridge.exchange.auth import PartnerAuth, partner_auth
from fhir_bridge.exchange.sender import SendResult, send_bundle
from fhir_bridge.fhir import jsonio
from fhir_bridge.store import delivery_queue as queue
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.partners import PartnerRow, PartnerStore

if TYPE_CHECKING:
    from fhir_bridge.services.runtime import Runtime

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: (runtime) -> number of delivery rows routed
Router = Callable[["Runtime"], int]
#: (session, delivery pk) -> the transaction Bundle to send
PayloadBuilder = Callable[[Session, int], dict[str, Any]]
AuthFactory = Callable[[PartnerRow, requests.Session], PartnerAuth]

#: a Retry-After beyond this is read as this (a partner cannot park a row for weeks)
MAX_RETRY_AFTER = 24 * 3600.0


def default_router(runtime: Runtime) -> int:
    """``services.routing.route_pending`` (imported on first use)."""
    from fhir_bridge.services.routing import route_pending

    return route_pending(runtime, limit=500)


def default_builder(clinic_system_base: str) -> PayloadBuilder:
    """``services.delivery_payload.build_payload`` on the ``store.deliveries`` row."""

    def build(session: Session, pk: int) -> dict[str, Any]:
        from fhir_bridge.services.delivery_payload import build_payload
        from fhir_bridge.store.deliveries import DeliveryStore

        delivery = DeliveryStore(session).get(pk)
        if delivery is None:
            raise LookupError(f"delivery {pk} is gone")
        return build_payload(session, delivery, clinic_system_base=clinic_system_base)

    return build


def default_auth(partner: PartnerRow, http: requests.Session) -> PartnerAuth:
    """``partner_auth`` for the partner, sharing the worker's HTTP session."""
    return partner_auth(partner.auth_kind, partner.auth, session=http)


@dataclass
class _Health:
    """One partner's state as this process saw it."""

    failures: int = 0
    succeeded: bool = False
    alerted: bool = False


class Worker:
    """Sends deliveries; see the module docstring. One instance per thread or process."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str,
        clock: Clock,
        sleep: Callable[[float], object],
        batch: int = 20,
        lease_seconds: float = 120,
        per_partner: int = queue.DEFAULT_PER_PARTNER,
        timeout: float = 10.0,
        backoff_base: float = backoff.DEFAULT_BASE,
        backoff_cap: float = backoff.DEFAULT_CAP,
        max_age: timedelta = backoff.DEFAULT_MAX_AGE,
        min_attempts: int = 5,
        idle_seconds: float = 5.0,
        alert_webhook: str | None = None,
        alert_after: int = 3,
        rng: random.Random | None = None,
        http: requests.Session | None = None,
        route: Router | None = None,
        build: PayloadBuilder | None = None,
        auth_factory: AuthFactory | None = None,
    ) -> None:
        """``clock`` returns naive UTC; ``sleep`` waits between idle cycles (pass
        ``stop_event.wait`` to stop promptly). ``min_attempts``: a row is given up after
        ``max_age`` only once it has had that many attempts (since it was created or requeued).
        ``route``/``build``/``auth_factory`` default to the services and ``partner_auth``.
        """
        self.runtime = runtime
        self.worker_id = worker_id
        self.clock = clock
        self.sleep = sleep
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.per_partner = per_partner
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_age = max_age
        self.min_attempts = min_attempts
        self.idle_seconds = idle_seconds
        self.alert_webhook = alert_webhook
        self.alert_after = alert_after
        self.rng = rng or random.Random()
        self.http = http or requests.Session()
        self.route = route or default_router
        self.build = build or default_builder(runtime.settings.clinic_system_base)
        self.auth_factory = auth_factory or default_auth
        self._auth: dict[tuple[int, datetime], PartnerAuth] = {}
        self._health: dict[int, _Health] = {}

    # -- the cycle -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Route, claim and send one batch; the number of deliveries attempted."""
        self.route(self.runtime)
        now = self.clock()
        with write_session(self.runtime.sessions) as session:
            pks = queue.claim(
                session,
                worker_id=self.worker_id,
                now=now,
                lease_seconds=self.lease_seconds,
                limit=self.batch,
                per_partner=self.per_partner,
            )
        if not pks:
            return 0
        lease = queue.lease_deadline(now, self.lease_seconds)
        # a send may take two timeouts (401 then retry) plus a token request
        margin = timedelta(seconds=3 * self.timeout)
        attempted = 0
        unsent: list[int] = []
        failing: set[int] = set()
        for index, pk in enumerate(pks):
            if self.clock() + margin >= lease:
                unsent.extend(pks[index:])
                break
            with read_session(self.runtime.sessions) as session:
                job = queue.job(session, pk)
                partner = PartnerStore(session).by_pk(job.partner_pk) if job else None
            if job is None or partner is None or not partner.enabled:
                unsent.append(pk)
                continue
            if job.partner_pk in failing:
                unsent.append(pk)
                continue
            result = self._deliver(job, partner, lease)
            if result is None:
                continue
            attempted += 1
            if result.outcome == "retry":
                failing.add(job.partner_pk)
        if unsent:
            with write_session(self.runtime.sessions) as session:
                queue.release(session, unsent, lease=lease)
        return attempted

    def run_forever(self, stop_event: threading.Event) -> None:
        """Cycle until ``stop_event`` is set, sleeping ``idle_seconds`` when there was no work.

        A failing cycle (database down ...) is logged by type only and retried after the
        idle pause: exception texts may quote row values.
        """
        log.info("delivery worker started", extra={"worker": self.worker_id})
        while not stop_event.is_set():
            try:
                attempted = self.run_once()
            except Exception as exc:
                log.error(
                    "delivery cycle failed",
                    extra={"worker": self.worker_id, "error_type": type(exc).__name__},
                )
                attempted = 0
            if attempted == 0 and not stop_event.is_set():
                self.sleep(self.idle_seconds)
        log.info("delivery worker stopped", extra={"worker": self.worker_id})

    # -- one delivery ----------------------------------------------------------------------

    def _deliver(self, job: queue.Job, partner: PartnerRow, lease: datetime) -> SendResult | None:
        """Send one claimed row and record the result; None when it could not be attempted."""
        payload = job.payload
        if payload is None:
            try:
                payload = self._store_payload(job.pk)
            except Exception as exc:
                # not the partner's fault: no alert; retried with backoff like a failure
                log.error(
                    "delivery payload could not be built",
                    extra={"delivery": job.pk, "error_type": type(exc).__name__},
                )
                self._record(
                    job,
                    SendResult("retry", error=f"payload could not be built ({type(exc).__name__})"),
                    lease,
                )
                return None
        try:
            auth = self._auth_for(partner)
        except Exception as exc:
            # AuthConfigError, SecretUnavailable: the partner's auth settings are unusable
            result = SendResult("retry", error=f"partner auth not usable ({type(exc).__name__})")
        else:
            result = send_bundle(
                partner.base_url,
                payload,
                auth=auth,
                session=self.http,
                timeout=self.timeout,
                now=self.clock(),
            )
        self._record(job, result, lease)
        self._track(partner, result)
        return result

    def _store_payload(self, pk: int) -> bytes:
        with write_session(self.runtime.sessions) as session:
            bundle = self.build(session, pk)
            return queue.store_payload(session, pk, jsonio.dumps(bundle))

    def _auth_for(self, partner: PartnerRow) -> PartnerAuth:
        key = (partner.pk, partner.updated_at)
        if key not in self._auth:
            for old in [k for k in self._auth if k[0] == partner.pk]:
                del self._auth[old]
            self._auth[key] = self.auth_factory(partner, self.http)
        return self._auth[key]

    def _record(self, job: queue.Job, result: SendResult, lease: datetime) -> None:
        now = self.clock()
        attempt = job.attempts + 1
        with write_session(self.runtime.sessions) as session:
            if result.outcome == "delivered":
                ours = queue.complete(
                    session, job.pk, now=now, status_code=result.status, lease=lease
                )
            elif result.outcome == "dead":
                ours = queue.dead(
                    session,
                    job.pk,
                    now=now,
                    status_code=result.status,
                    error=result.error,
                    outcome=result.outcome_body,
                    lease=lease,
                )
            elif attempt >= self.min_attempts and backoff.given_up(
                job.created_at, now, max_age=self.max_age
            ):
                ours = queue.dead(
                    session,
                    job.pk,
                    now=now,
                    status_code=result.status,
                    error=f"gave up after {self.max_age}: {result.error}",
                    outcome=result.outcome_body,
                    lease=lease,
                )
            else:
                ours = queue.retry_later(
                    session,
                    job.pk,
                    now=now,
                    next_at=now + timedelta(seconds=self._delay(attempt, result)),
                    status_code=result.status,
                    error=result.error,
                    outcome=result.outcome_body,
                    lease=lease,
                )
        if not ours:
            log.warning(
                "delivery lease lost before the result was recorded",
                extra={"delivery": job.pk, "worker": self.worker_id, "outcome": result.outcome},
            )

    def _delay(self, attempt: int, result: SendResult) -> float:
        delay = backoff.next_delay(
            attempt, base=self.backoff_base, cap=self.backoff_cap, rng=self.rng
        )
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, MAX_RETRY_AFTER))
        return delay

    # -- partner health --------------------------------------------------------------------

    def _track(self, partner: PartnerRow, result: SendResult) -> None:
        health = self._health.setdefault(partner.pk, _Health())
        if result.delivered:
            if health.alerted:
                log.warning("partner %s recovered", partner.key, extra={"partner": partner.key})
            self._health[partner.pk] = _Health(succeeded=True)
            return
        health.failures += 1
        if health.alerted:
            return
        if health.succeeded or health.failures >= self.alert_after:
            health.alerted = True
            self._alert(partner, result, health.failures)

    def _alert(self, partner: PartnerRow, result: SendResult, failures: int) -> None:
        """Once per incident: ERROR log and the optional webhook (ids and codes only)."""
        log.error(
            "partner %s failing",
            partner.key,
            extra={
                "partner": partner.key,
                "failures": failures,
                "status": result.status,
                "error": result.error,
                "worker": self.worker_id,
            },
        )
        if not self.alert_webhook:
            return
        body = {
            "event": "partner.failing",
            "partner": partner.key,
            "failures": failures,
            "last_status": result.status,
            "last_error": result.error,
            "worker": self.worker_id,
            "at": self.clock().isoformat(timespec="seconds") + "Z",
        }
        try:
            self.http.post(self.alert_webhook, json=body, timeout=5)
        except requests.RequestException as exc:
            log.warning("alert webhook failed", extra={"error_type": type(exc).__name__})
