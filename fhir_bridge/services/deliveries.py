"""The message log's use cases: list and show deliveries, and requeue dead letters.

``delivery_view`` is the only shape a delivery leaves the bridge in (``/api/v1/deliveries``):
attempts, the last status and error, the partner's OperationOutcome (detail only) and
timings; never the payload (the Bundle is PHI and stays in the database).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_bridge.fhir import jsonio
from fhir_bridge.outbox import queue
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.deliveries import DeliveryRow, DeliveryStore
from fhir_bridge.store.delivery_attempts import Attempt, attempts_of

STATUSES = (queue.PENDING, queue.DELIVERED, queue.DEAD)


class InvalidQuery(ValueError):
    """A filter value the log cannot use; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class DeliveryNotFound(LookupError):
    """No delivery with that id."""


class NotRetryable(Exception):
    """Only a dead delivery can be requeued; ``status`` is the delivery's."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Only a dead delivery can be retried; this one is {status}")
        self.status = status


@dataclass(frozen=True)
class DeliveryQuery:
    """Filters of the log; None means any. Newest first; ``before_pk`` pages."""

    partner_key: str | None = None
    status: str | None = None
    #: ``Patient/<id>`` or a bare id
    patient: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    before_pk: int | None = None
    limit: int = 50


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def parse_since(raw: str | None) -> datetime | None:
    """An ISO 8601 date or date-time as naive UTC; InvalidQuery when it is not one."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQuery("since", "since is an ISO 8601 date or date-time") from None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def parse_status(raw: str | None) -> str | None:
    """A delivery status filter; InvalidQuery when it is not one of STATUSES."""
    if raw is not None and raw not in STATUSES:
        raise InvalidQuery("status", f"status is one of {', '.join(STATUSES)}")
    return raw


def list_deliveries(runtime: Runtime, query: DeliveryQuery) -> list[DeliveryRow]:
    """Deliveries matching ``query``, newest first, at most ``query.limit``."""
    parse_status(query.status)
    with read_session(runtime.sessions) as session:
        return DeliveryStore(session).list(
            partner_key=query.partner_key,
            status=query.status,
            patient_id=query.patient.removeprefix("Patient/") if query.patient else None,
            event_type=query.event_type,
            since=query.since,
            before_pk=query.before_pk,
            newest_first=True,
            limit=query.limit,
        )


def get_delivery(runtime: Runtime, pk: int) -> DeliveryRow:
    """One delivery; DeliveryNotFound when there is none."""
    with read_session(runtime.sessions) as session:
        found = DeliveryStore(session).get(pk)
    if found is None:
        raise DeliveryNotFound(pk)
    return found


def delivery_history(runtime: Runtime, pk: int) -> tuple[DeliveryRow, list[Attempt]]:
    """One delivery and every attempt made at it, oldest first; DeliveryNotFound."""
    with read_session(runtime.sessions) as session:
        found = DeliveryStore(session).get(pk)
        if found is None:
            raise DeliveryNotFound(pk)
        return found, attempts_of(session, pk)


def delivery_payload(runtime: Runtime, pk: int) -> bytes | None:
    """The Bundle sent (or to be resent) for a delivery: PHI, for PHI-permitted callers only.

    DeliveryNotFound when there is no such delivery; None before its first attempt.
    """
    with read_session(runtime.sessions) as session:
        store = DeliveryStore(session)
        if store.get(pk) is None:
            raise DeliveryNotFound(pk)
        return store.payload(pk)


def retry_delivery(runtime: Runtime, pk: int, *, now: datetime | None = None) -> DeliveryRow:
    """Requeue a dead letter, due at ``now`` (default: the clock); the delivery after it.

    DeliveryNotFound when there is none, NotRetryable when it is not dead.
    """
    with write_session(runtime.sessions) as session:
        requeued = queue.requeue(session, pk, now=now or _utcnow())
        found = DeliveryStore(session).get(pk)
    if found is None:
        raise DeliveryNotFound(pk)
    if not requeued:
        raise NotRetryable(found.status)
    return found


def _time(value: datetime | None, timespec: str = "seconds") -> str | None:
    return None if value is None else value.isoformat(timespec=timespec) + "Z"


def _outcome(raw: str | None) -> Any:
    """The partner's OperationOutcome as JSON when it is JSON, else the text it sent."""
    if raw is None:
        return None
    try:
        return jsonio.loads(raw)
    except jsonio.JsonError:
        return raw


def attempt_view(a: Attempt) -> dict[str, Any]:
    """One attempt as the log shows it (the partner's OperationOutcome as JSON)."""
    return {
        "at": _time(a.attempted_at, "milliseconds"),
        "duration_ms": a.duration_ms,
        "result": a.result,
        "status": a.http_status,
        "error": a.error,
        "outcome": _outcome(a.outcome),
        "worker": a.worker,
    }


def delivery_view(
    d: DeliveryRow, *, detail: bool = False, history: list[Attempt] | None = None
) -> dict[str, Any]:
    """The operator's view of a delivery; ``detail`` adds the partner's OperationOutcome of
    the last failure, ``history`` every attempt (a success does not erase a failure there)."""
    body: dict[str, Any] = {
        "id": d.pk,
        "partner": d.partner_key,
        "event_type": d.event_type,
        "outbox_id": d.outbox_pk,
        "patient": f"Patient/{d.patient_id}" if d.patient_id else None,
        "status": d.status,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": _time(d.created_at),
        "first_failed_at": _time(d.first_failed_at),
        "last_attempt_at": _time(d.last_attempt_at),
        "next_attempt_at": _time(d.next_attempt_at) if d.status == queue.PENDING else None,
        "delivered_at": _time(d.delivered_at),
        "in_flight_until": _time(d.lease_until),
    }
    if detail:
        body["outcome"] = _outcome(d.outcome)
    if history is not None:
        body["history"] = [attempt_view(a) for a in history]
    return body
