"""``GET /api/v1/referrals/{id}/progress-report``: the report as HTML or PDF, by ``Accept``;
``POST`` files it now as a DocumentReference (``services.report_documents``).

Under ``/api/v1``, so the request guard already limits it to the clinic's own roles. Logs carry
the route only (no ids, no names).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from fhir_bridge.api.http import runtime
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.reports.html import render_html
from fhir_bridge.reports.model import KINDS
from fhir_bridge.reports.pdf import render_pdf
from fhir_bridge.services.progress_report import pdf_disposition, referral_report
from fhir_bridge.services.report_documents import file_report_now

progress_reports_api = Blueprint("progress_reports_api", __name__, url_prefix="/api/v1")

HTML, PDF = "text/html", "application/pdf"


@progress_reports_api.get("/referrals/<referral_id>/progress-report")
def progress_report(referral_id: str) -> Response:
    """``kind=progress`` (default) or ``kind=discharge``; 406 unless HTML or PDF is acceptable."""
    kind = request.args.get("kind", "progress")
    if kind not in KINDS:
        raise FhirError(400, error("invalid", f"kind is one of {', '.join(KINDS)}", "kind"))
    wanted = request.accept_mimetypes.best_match([HTML, PDF]) if request.accept_mimetypes else HTML
    if wanted is None:
        raise FhirError(
            406,
            error(
                "not-supported", "The report is available as text/html or application/pdf", "Accept"
            ),
        )
    tables = current_app.extensions["fhir_bridge_tables"]
    _, report = referral_report(runtime(), tables, referral_id, kind)
    if wanted == PDF:
        response = Response(render_pdf(report), mimetype=PDF)
        response.headers["Content-Disposition"] = pdf_disposition(kind, referral_id)
    else:
        response = Response(render_html(report), mimetype=HTML)
    response.headers["Cache-Control"] = "no-store"  # PHI
    response.headers["Vary"] = "Accept"
    return response


@progress_reports_api.post("/referrals/<referral_id>/progress-report")
def file_progress_report(referral_id: str) -> Response:
    """File the report now as the next version of its DocumentReference (201, FHIR JSON)."""
    kind = request.args.get("kind", "progress")
    if kind not in KINDS:
        raise FhirError(400, error("invalid", f"kind is one of {', '.join(KINDS)}", "kind"))
    stored = file_report_now(
        runtime(), current_app.extensions["fhir_bridge_tables"], referral_id, kind
    )
    response = Response(stored.content, status=201, mimetype="application/fhir+json")
    response.headers["Location"] = (
        f"{runtime().settings.fhir_base_url}/DocumentReference/{stored.resource_id}"
        f"/_history/{stored.version_id}"
    )
    response.headers["ETag"] = stored.etag
    response.headers["Cache-Control"] = "no-store"  # PHI
    return response
