"""Deliveries to partners (/api/v1/deliveries): what was sent, what failed, and retrying it.

HTTP only: query parameters in, ``services.deliveries`` does the work, JSON or an
OperationOutcome out. The views never show the payload; ``/payload`` shows it to PHI-permitted
(admin) credentials only, and each view of it is audited.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from fhir_bridge.api.http import runtime
from fhir_bridge.api.paging import (
    decode_cursor,
    next_link,
    page_size,
    refuse_unknown,
    whole_number,
)
from fhir_bridge.api.security import current_principal
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.services import deliveries as service

deliveries_api = Blueprint("deliveries_api", __name__, url_prefix="/api/v1")

#: who may read payloads (PHI): the clinic's administrators
PHI_PERMITTED_ROLES = frozenset({"admin"})
_PARAMS = {"partner", "status", "patient", "event", "since", "_count", "_cursor"}


def _not_found() -> FhirError:
    return FhirError(404, error("not-found", "No such delivery", "id"))


def _pk(delivery_id: str) -> int:
    pk = whole_number(delivery_id)
    if pk is None:
        raise _not_found()
    return pk


@deliveries_api.get("/deliveries")
def list_deliveries() -> Response:
    """Deliveries, newest first; filters partner (key), status, patient, event, since."""
    refuse_unknown(request.args, _PARAMS)
    limit = page_size(request.args.get("_count"))
    try:
        query = service.DeliveryQuery(
            partner_key=request.args.get("partner"),
            status=service.parse_status(request.args.get("status")),
            patient=request.args.get("patient"),
            event_type=request.args.get("event"),
            since=service.parse_since(request.args.get("since")),
            before_pk=decode_cursor(request.args.get("_cursor")),
            limit=limit + 1,
        )
        rows = service.list_deliveries(runtime(), query)
    except service.InvalidQuery as exc:
        raise FhirError(400, error("invalid", str(exc), exc.param)) from None
    page = rows[:limit]
    body: dict[str, Any] = {"deliveries": [service.delivery_view(d) for d in page]}
    if len(rows) > limit:
        body["next"] = next_link("/api/v1/deliveries", request.args, page[-1].pk)
    return jsonify(body)


@deliveries_api.get("/deliveries/<delivery_id>")
def read_delivery(delivery_id: str) -> Response:
    """One delivery, with the partner's OperationOutcome of its last failure and every
    attempt made (``history``)."""
    try:
        found, history = service.delivery_history(runtime(), _pk(delivery_id))
    except service.DeliveryNotFound:
        raise _not_found() from None
    return jsonify(service.delivery_view(found, detail=True, history=history))


@deliveries_api.get("/deliveries/<delivery_id>/payload")
def delivery_payload(delivery_id: str) -> Response:
    """The Bundle sent, exactly as sent; only with a PHI-permitted credential (admin role)."""
    if current_principal().role not in PHI_PERMITTED_ROLES:
        raise FhirError(
            403,
            error(
                "forbidden",
                "The payload holds PHI: it is shown to the clinic's admin credentials only",
                "http.Authorization",
            ),
        )
    try:
        payload = service.delivery_payload(runtime(), _pk(delivery_id))
    except service.DeliveryNotFound:
        raise _not_found() from None
    if payload is None:
        raise FhirError(
            404, error("not-found", "Nothing has been sent for this delivery yet", "id")
        )
    return Response(payload, mimetype="application/fhir+json")


@deliveries_api.post("/deliveries/<delivery_id>/retry")
def retry_delivery(delivery_id: str) -> Response:
    """Requeue a dead letter (due at once); 409 when the delivery is not dead."""
    try:
        found = service.retry_delivery(runtime(), _pk(delivery_id))
    except service.DeliveryNotFound:
        raise _not_found() from None
    except service.NotRetryable as exc:
        raise FhirError(409, error("conflict", str(exc), "status")) from None
    return jsonify(service.delivery_view(found, detail=True))
