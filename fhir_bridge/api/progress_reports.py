"""``GET /api/v1/referrals/{id}/progress-report``: the report as HTML or PDF, by ``Accept``.

Under ``/api/v1``, so the request guard already limits it to the clinic's own roles. Logs carry
the route only (no ids, no names).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request

from fhir_bridge.api.http import runtime
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.reports.html import render_html
from fhir_bridge.reports.model import KINDS, build_report
from fhir_bridge.reports.pdf import render_pdf
from fhir_bridge.services.progress_report import gather_episode

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
    rt = runtime()
    episode = gather_episode(rt, referral_id)
    report = build_report(
        episode,
        current_app.extensions["fhir_bridge_tables"],
        kind=kind,
        clinic=rt.settings.clinic_name,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    if wanted == PDF:
        response = Response(render_pdf(report), mimetype=PDF)
        response.headers["Content-Disposition"] = (
            f'inline; filename="{kind}-report-{referral_id}.pdf"'
        )
    else:
        response = Response(render_html(report), mimetype=HTML)
    response.headers["Cache-Control"] = "no-store"  # PHI
    response.headers["Vary"] = "Accept"
    return response
