"""The pages of a clinic's day: Today, the referral inbox and a referral, patients, a visit.

Actions go through the API's services (``services.referrals.act``); reads that show PHI are
audited (``console.audit``). No PHI is ever put in a URL's query string: patients are found
with a POSTed form and opened by their opaque id in the path.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for

from fhir_bridge.api.http import runtime
from fhir_bridge.console import console
from fhir_bridge.console.audit import audit_access
from fhir_bridge.console.charts import chart
from fhir_bridge.console.display import indent_json, register
from fhir_bridge.console.outcome_adapter import measure_series
from fhir_bridge.fhir.outcome import FhirError
from fhir_bridge.mapping.referral_task import allowed_actions
from fhir_bridge.services import console_queries as queries
from fhir_bridge.services import referrals as referral_service
from fhir_bridge.services import sessions as session_service

register(console)
REFERRAL_STATUSES = ("requested", "accepted", "in-progress", "rejected", "completed", "cancelled")
PAGE = 50


def _problem(exc: FhirError) -> str:
    return "; ".join(i.diagnostics for i in exc.issues if i.diagnostics) or "Not possible"


@console.errorhandler(FhirError)
def _fhir_error(exc: FhirError) -> tuple[str, int]:
    title = "Not found" if exc.status in (404, 410) else "Not possible"
    return render_template("error.html", title=title, message=_problem(exc)), exc.status


@console.get("/")
def today() -> str:
    """What needs attention today."""
    data = queries.today(runtime())
    audit_access("search", "Patient", query="console:today")
    return render_template("today.html", t=data)


@console.get("/referrals")
def referrals() -> str:
    """The inbox, filtered by status, in arrival order (``after`` pages)."""
    status = request.args.get("status", "")
    if status not in REFERRAL_STATUSES:
        status = ""
    after = request.args.get("after", "")
    rows, patients = queries.referral_inbox(
        runtime(),
        status=status or None,
        after_pk=int(after) if after.isdigit() and len(after) < 16 else None,
        limit=PAGE + 1,
    )
    audit_access("search", "ServiceRequest", query=f"console:referrals?status={status}")
    return render_template(
        "referrals.html",
        rows=rows[:PAGE],
        patients=patients,
        status=status,
        statuses=REFERRAL_STATUSES,
        next_after=rows[PAGE - 1].pk if len(rows) > PAGE else None,
    )


@console.get("/referrals/<referral_id>")
def referral(referral_id: str) -> str:
    """A referral: prescription, warnings, visits used and left, versions, actions."""
    rt = runtime()
    row = referral_service.get_referral(rt, referral_id)
    found = queries.referral_resources(rt, row)
    versions = queries.referral_history(rt, row)
    audit_access("read", "ServiceRequest", row.service_request_id)
    if row.patient_id:
        audit_access("read", "Patient", row.patient_id)
    return render_template(
        "referral.html",
        r=row,
        sr=found.get("ServiceRequest") or {},
        patient=found.get("Patient"),
        changes=_changes(versions),
        actions=[a for a in allowed_actions(row.status) if a in referral_service.ACTION_EVENTS],
    )


def _changes(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each version with the top-level elements that differ from the one before it."""
    out, previous = [], None
    for v in versions:
        meta = v.get("meta", {})
        changed = []
        if previous is not None:
            keys = (set(v) | set(previous)) - {"meta", "text"}
            changed = sorted(k for k in keys if v.get(k) != previous.get(k))
        out.append(
            {"version": meta.get("versionId"), "at": meta.get("lastUpdated"), "changed": changed}
        )
        previous = v
    return out


@console.post("/referrals/<referral_id>/<action>")
def referral_action(referral_id: str, action: str) -> Any:
    """Accept, decline (with a reason) or complete, through ``services.referrals.act``."""
    reason = request.form.get("reason") or None
    try:
        outcome = referral_service.act(
            runtime(),
            referral_id,
            action,
            reason=reason,
            tables=current_app.extensions["fhir_bridge_tables"],
        )
    except FhirError as exc:
        if exc.status == 404:
            raise
        flash(_problem(exc), "error")
    else:
        flash(f"Referral {outcome.referral.status}.", "ok")
    return redirect(url_for("console.referral", referral_id=referral_id))


@console.route("/patients", methods=["GET", "POST"])
def patients() -> str:
    """Find a patient by name or MRN (POSTed: a name never goes into a URL)."""
    text = request.form.get("q", "").strip()[:100] if request.method == "POST" else ""
    found = queries.search_patients(runtime(), text) if text else []
    if text:
        audit_access("search", "Patient", query=f"name={text}")
    return render_template(
        "patients.html", q=text, found=found, searched=bool(text), mrn_system=_mrn_system()
    )


def _mrn_system() -> str:
    return f"{runtime().settings.clinic_system_base}/mrn"


@console.get("/patients/<patient_id>")
def patient(patient_id: str) -> str:
    """A patient: referrals, visit timeline, outcome charts, deliveries."""
    f = queries.patient_file(runtime(), patient_id)
    audit_access("read", "Patient", patient_id)
    tables = current_app.extensions["fhir_bridge_tables"]
    charts = [chart(s) for s in measure_series(f.observations, f.goals, tables) if s.points]
    return render_template("patient.html", f=f, charts=charts, patient_id=patient_id)


@console.get("/visits/<session_id>")
def visit(session_id: str) -> str:
    """A visit: the record as received, its FHIR resources, billing, flags, deliveries."""
    rt = runtime()
    stored = session_service.get_session(rt, session_id)
    view = session_service.session_view(
        stored,
        current_app.extensions["fhir_bridge_tables"],
        current_app.extensions["fhir_bridge_vocabulary"],
    )
    made = view["resources"]
    patient = queries.visit_patient(rt, _as_refs(made))
    procedure = next((r for r in made if _type(r) == "Procedure"), None)
    audit_access("read", "Procedure", str(procedure.get("id")) if procedure else None)
    if patient:
        audit_access("read", "Patient", str(patient.get("id")))
    return render_template(
        "visit.html",
        v=view,
        record_text=indent_json(stored.record.decode("utf-8", "replace")),
        patient=patient,
        deliveries=queries.visit_deliveries(rt, _as_refs(made)),
    )


def _type(ref: dict[str, Any]) -> str:
    return str(ref.get("resourceType") or ref.get("type") or "")


def _as_refs(made: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's resource list as {resourceType, id} (stored as type/id/version)."""
    return [{"resourceType": _type(r), "id": r.get("id")} for r in made]
