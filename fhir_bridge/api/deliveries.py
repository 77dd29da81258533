"""Deliveries to partners (/api/v1/deliveries): what was sent, what failed, and retrying it.

The views show attempts, the last status and error, the partner's OperationOutcome (detail
only) and timings; never the payload (the Bundle is PHI and stays in the database).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from fhir_bridge.api.http import runtime
from fhir_bridge.api.paging import decode_cursor, next_link, page_size, refuse_unknown
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.store import delivery_queue as queue
from fhir_bridge.store.db import read_session, write_session

deliveries_api = Blueprint("deliveries_api", __name__, url_prefix="/api/v1")

STATUSES = (queue.PENDING, queue.DELIVERED, queue.DEAD)
_PARAMS = {"partner", "status", "patient", "event", "since", "_count", "_cursor"}


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def _outcome(raw: str | None) -> Any:
    """The partner's OperationOutcome as JSON when it is JSON, else the text it sent."""
    if raw is None:
        return None
    try:
        return jsonio.loads(raw)
    except jsonio.JsonError:
        return raw


def _view(d: queue.DeliveryView, *, detail: bool = False) -> dict[str, Any]:
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
        "last_attempt_at": _time(d.last_attempt_at),
        "next_attempt_at": _time(d.next_attempt_at) if d.status == queue.PENDING else None,
        "delivered_at": _time(d.delivered_at),
        "in_flight_until": _time(d.lease_until),
    }
    if detail:
        body["outcome"] = _outcome(d.outcome)
    return body


def _since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FhirError(
            400, error("invalid", "since is an ISO 8601 date or date-time", "since")
        ) from None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _status(raw: str | None) -> str | None:
    if raw is not None and raw not in STATUSES:
        raise FhirError(400, error("invalid", f"status is one of {', '.join(STATUSES)}", "status"))
    return raw


def _pk(delivery_id: str) -> int:
    if not delivery_id.isdigit():
        raise FhirError(404, error("not-found", "No such delivery", "id"))
    return int(delivery_id)


@deliveries_api.get("/deliveries")
def list_deliveries() -> Response:
    """Deliveries, newest first; filters partner (key), status, patient, event, since."""
    refuse_unknown(request.args, _PARAMS)
    limit = page_size(request.args.get("_count"))
    patient = request.args.get("patient")
    where = queue.DeliveryFilter(
        partner_key=request.args.get("partner"),
        status=_status(request.args.get("status")),
        patient_id=patient.removeprefix("Patient/") if patient else None,
        event_type=request.args.get("event"),
        since=_since(request.args.get("since")),
        before_pk=decode_cursor(request.args.get("_cursor")),
        limit=limit + 1,
    )
    with read_session(runtime().sessions) as session:
        rows = queue.list_deliveries(session, where)
    page = rows[:limit]
    body: dict[str, Any] = {"deliveries": [_view(d) for d in page]}
    if len(rows) > limit:
        body["next"] = next_link("/api/v1/deliveries", request.args, page[-1].pk)
    return jsonify(body)


@deliveries_api.get("/deliveries/<delivery_id>")
def read_delivery(delivery_id: str) -> Response:
    """One delivery, with the partner's OperationOutcome of its last failure."""
    with read_session(runtime().sessions) as session:
        found = queue.get_delivery(session, _pk(delivery_id))
    if found is None:
        raise FhirError(404, error("not-found", "No such delivery", "id"))
    return jsonify(_view(found, detail=True))


@deliveries_api.post("/deliveries/<delivery_id>/retry")
def retry_delivery(delivery_id: str) -> Response:
    """Requeue a dead letter (due at once); 409 when the delivery is not dead."""
    pk = _pk(delivery_id)
    now = datetime.now(UTC).replace(tzinfo=None)
    with write_session(runtime().sessions) as session:
        requeued = queue.requeue(session, pk, now=now)
        found = queue.get_delivery(session, pk)
    if found is None:
        raise FhirError(404, error("not-found", "No such delivery", "id"))
    if not requeued:
        raise FhirError(
            409,
            error("conflict", f"Only a dead delivery can be retried; this one is {found.status}"),
        )
    return jsonify(_view(found, detail=True))
