"""A referral's progress report and discharge summary, from the patient page.

The same helper as ``GET /api/v1/referrals/<id>/progress-report`` makes them
(``services.progress_report.referral_report``, then ``reports.pdf.render_pdf`` /
``reports.html.render_html``; ``pdf_disposition`` names the download for both): the console
adds its session login, its audit and its CSP, nothing else. The URL carries ids only; the
kind and format are path segments, so no query string is needed.
"""

from __future__ import annotations

from flask import Response, current_app

from fhir_bridge.api.http import runtime
from fhir_bridge.console import console
from fhir_bridge.console.audit import audit_access
from fhir_bridge.reports.html import render_html
from fhir_bridge.reports.pdf import render_pdf
from fhir_bridge.services import progress_report

#: The report is a standalone document whose template carries a <style> block and a style
#: attribute (fhir_bridge/reports/templates/report.html.j2, shared with the API), and its charts
#: are inline SVG. Rather than relax the console's policy, this one response gets its own: no
#: script at all, no fetches, no forms, no framing; inline styles and data: images only.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PDF, HTML = "application/pdf", "text/html"


@console.get("/referrals/<referral_id>/report/<any(progress, discharge):kind>.<any(pdf, html):fmt>")
def referral_report(referral_id: str, kind: str, fmt: str) -> Response:
    """The progress report (``progress``) or discharge summary (``discharge``), PDF to download
    or HTML to read; every staff role that opens the patient page may open it. Audited."""
    tables = current_app.extensions["fhir_bridge_tables"]
    # a 404 OperationOutcome shows the error page
    episode, report = progress_report.referral_report(runtime(), tables, referral_id, kind)
    audit_access("read", "ServiceRequest", referral_id)
    patient_id = episode.patient.get("id")
    if patient_id:
        audit_access("read", "Patient", str(patient_id))
    if fmt == "pdf":
        response = Response(render_pdf(report), mimetype=PDF)
        response.headers["Content-Disposition"] = progress_report.pdf_disposition(kind, referral_id)
    else:
        response = Response(render_html(report), mimetype=HTML)
        response.headers["Content-Security-Policy"] = REPORT_CSP
    return response
