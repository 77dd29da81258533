"""The clinic's internal API: massage-session records in, their FHIR outcome out (/api/v1)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, g, jsonify, request

from fhir_bridge.api.http import fhir_response, runtime
from fhir_bridge.api.paging import decode_cursor, next_link, page_size, refuse_unknown
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.records.errors import RecordInvalid, to_operation_outcome
from fhir_bridge.records.openapi import openapi_spec
from fhir_bridge.services import sessions as service

sessions_api = Blueprint("sessions_api", __name__, url_prefix="/api/v1")


def _tables():
    return current_app.extensions["fhir_bridge_tables"]


def _vocabulary():
    return current_app.extensions["fhir_bridge_vocabulary"]


@sessions_api.errorhandler(RecordInvalid)
def _invalid(exc: RecordInvalid) -> Response:
    return fhir_response(to_operation_outcome(exc.problems), 422)


@sessions_api.post("/sessions")
def submit() -> Response:
    """Create (201) or replace (200) a session record by its session_id."""
    if request.mimetype not in ("application/json", "application/fhir+json"):
        raise FhirError(415, error("not-supported", "Send the session record as application/json"))
    outcome = service.submit_session(
        runtime(),
        _tables(),
        _vocabulary(),
        body=request.get_data(cache=False),
        request_id=g.get("request_id"),
        content_type=request.content_type,
    )
    view = service.session_view(outcome.session, _tables(), _vocabulary())
    response = jsonify(view)
    response.status_code = 201 if outcome.created else 200
    response.headers["Location"] = f"/api/v1/sessions/{outcome.session.session_id}"
    return response


@sessions_api.get("/sessions/<session_id>")
def read(session_id: str) -> Response:
    """One session: the record as stored, status, produced resources, billing units, flags."""
    stored = service.get_session(runtime(), session_id)
    return jsonify(service.session_view(stored, _tables(), _vocabulary()))


def _since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise FhirError(
            400, error("invalid", "since must be an ISO date or date-time", "since")
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


@sessions_api.get("/sessions")
def search() -> Response:
    """Sessions, optionally of one patient (MRN) and since a date, paged with a cursor."""
    refuse_unknown(request.args, {"patient", "since", "_count", "_cursor"})
    limit = page_size(request.args.get("_count"))
    rows = service.list_sessions(
        runtime(),
        patient_mrn=request.args.get("patient"),
        since=_since(request.args.get("since")),
        after_pk=decode_cursor(request.args.get("_cursor")),
        limit=limit + 1,
    )
    page = rows[:limit]
    body: dict[str, object] = {
        "sessions": [service.session_view(s, _tables(), _vocabulary()) for s in page],
    }
    if len(rows) > limit:
        body["next"] = next_link("/api/v1/sessions", request.args, page[-1].pk)
    return jsonify(body)


@sessions_api.get("/openapi.json")
def openapi() -> Response:
    """The internal API as OpenAPI 3, generated from the marshmallow schemas."""
    return jsonify(openapi_spec(server_url=runtime().settings.public_base_url))
