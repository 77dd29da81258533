"""The clinic's referral inbox (/api/v1/referrals) and the actions on a referral."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from fhir_bridge.api.http import runtime
from fhir_bridge.api.paging import decode_cursor, next_link, page_size, refuse_unknown
from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.services import referrals as service
from fhir_bridge.services.referrals import ReferralFilter

referrals_api = Blueprint("referrals_api", __name__, url_prefix="/api/v1")


def _requester_filter(raw: str | None) -> dict[str, str]:
    """``requester``: a 10-digit NPI, or a reference such as ``Practitioner/123``."""
    if raw is None:
        return {}
    if raw.isascii() and raw.isdigit():
        return {"requester_npi": raw}
    if raw.startswith(("Practitioner/", "PractitionerRole/")):
        return {"requester_reference": raw}
    raise FhirError(
        400,
        error(
            "invalid",
            "requester is an NPI or Practitioner/<id> (PractitionerRole/<id>)",
            "requester",
        ),
    )


@referrals_api.get("/referrals")
def inbox() -> Response:
    """Referrals, filtered by status, patient (Patient id) and requester, paged."""
    refuse_unknown(request.args, {"status", "patient", "requester", "_count", "_cursor"})
    limit = page_size(request.args.get("_count"))
    patient = request.args.get("patient")
    rows = service.list_referrals(
        runtime(),
        ReferralFilter(
            status=request.args.get("status"),
            patient_id=patient.removeprefix("Patient/") if patient else None,
            after_pk=decode_cursor(request.args.get("_cursor")),
            limit=limit + 1,
            **_requester_filter(request.args.get("requester")),
        ),
    )
    page = rows[:limit]
    body: dict[str, object] = {"referrals": [service.referral_view(r) for r in page]}
    if len(rows) > limit:
        body["next"] = next_link("/api/v1/referrals", request.args, page[-1].pk)
    return jsonify(body)


@referrals_api.get("/referrals/<referral_id>")
def read(referral_id: str) -> Response:
    """One referral: prescription, visits used and left, warnings, allowed actions."""
    return jsonify(service.referral_view(service.get_referral(runtime(), referral_id)))


def _reason() -> str | None:
    raw = request.get_data(cache=False)
    if not raw.strip():
        return None
    try:
        body = jsonio.loads(raw)
    except jsonio.JsonError as exc:
        raise FhirError(400, error("structure", str(exc), "body")) from None
    if not isinstance(body, dict):
        raise FhirError(400, error("structure", 'Send {"reason": "..."}', "body"))
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise FhirError(422, error("value", "reason must be text", "reason"))
    return reason


@referrals_api.post("/referrals/<referral_id>/<action>")
def act(referral_id: str, action: str) -> Response:
    """accept | decline (body ``{"reason": "..."}``) | complete."""
    tables = current_app.extensions["fhir_bridge_tables"]
    outcome = service.act(runtime(), referral_id, action, reason=_reason(), tables=tables)
    return jsonify(service.referral_view(outcome.referral))
