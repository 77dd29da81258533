"""Operations pages: the delivery log (all staff), and for clinic admins partners, API
clients, delivery payloads and the audit log.

Resends, registrations and enable/disable go through the API's services
(``services.deliveries``, ``services.partners``, ``services.clients``).
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import date
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from fhir_bridge.api.http import runtime
from fhir_bridge.console import console
from fhir_bridge.console.audit import audit_access
from fhir_bridge.console.auth import requires_admin
from fhir_bridge.console.display import outcome_summary
from fhir_bridge.security.keygen import es384_key_pair
from fhir_bridge.services import clients as client_service
from fhir_bridge.services import console_queries as queries
from fhir_bridge.services import deliveries as delivery_service
from fhir_bridge.services import partner_check
from fhir_bridge.services import partners as partner_service
from fhir_bridge.services.clients import ClientExists

PAGE = 50
CLIENT_ROLES = ("payer", "ehr", "clinic", "admin")


def _delivery_query() -> delivery_service.DeliveryQuery:
    """Filters from the query string: partner key, status, a day (no PHI)."""
    status = request.args.get("status") or None
    if status not in (None, *delivery_service.STATUSES):
        status = None
    try:
        since = delivery_service.parse_since(request.args.get("since") or None)
    except delivery_service.InvalidQuery:
        since = None
    before = request.args.get("before", "")
    return delivery_service.DeliveryQuery(
        partner_key=request.args.get("partner") or None,
        status=status,
        since=since,
        before_pk=int(before) if before.isdigit() and len(before) < 16 else None,
        limit=PAGE + 1,
    )


@console.get("/deliveries")
def deliveries() -> str:
    """The message log, newest first, filtered by partner, status and date."""
    rt = runtime()
    query = _delivery_query()
    rows = delivery_service.list_deliveries(rt, query)
    return render_template(
        "deliveries.html",
        rows=rows[:PAGE],
        query=query,
        since=request.args.get("since", ""),
        partners=partner_service.list_partners(rt),
        statuses=delivery_service.STATUSES,
        next_before=rows[PAGE - 1].pk if len(rows) > PAGE else None,
    )


def _delivery(delivery_id: int) -> delivery_service.DeliveryRow:
    try:
        return delivery_service.get_delivery(runtime(), delivery_id)
    except delivery_service.DeliveryNotFound:
        abort(404)


@console.get("/deliveries/<int(max=9007199254740991):delivery_id>")
def delivery(delivery_id: int) -> str:
    """One delivery: every attempt, oldest first, and the partner's last OperationOutcome."""
    try:
        row, history = delivery_service.delivery_history(runtime(), delivery_id)
    except delivery_service.DeliveryNotFound:
        abort(404)
    view = delivery_service.delivery_view(row, detail=True, history=history)
    outcome = view.get("outcome")
    return render_template(
        "delivery.html",
        d=row,
        attempts=[_attempt_row(a) for a in view["history"]],
        outcome=json.dumps(outcome, indent=2) if outcome is not None else None,
    )


def _attempt_row(attempt: dict[str, Any]) -> dict[str, Any]:
    """An attempt as ``services.deliveries.attempt_view`` gives it, ready for the table."""
    at = attempt.get("at") or ""
    return {
        **attempt,
        "at_text": at.replace("T", " ").removesuffix("Z") + " UTC" if at else "-",
        "issues": outcome_summary(attempt.get("outcome")),
    }


@console.get("/deliveries/<int(max=9007199254740991):delivery_id>/payload")
@requires_admin
def delivery_payload(delivery_id: int) -> str:
    """The Bundle as sent: PHI, for clinic admins only, audited."""
    row = _delivery(delivery_id)
    payload = delivery_service.delivery_payload(runtime(), delivery_id)
    audit_access("read", "Bundle", query=f"/api/v1/deliveries/{delivery_id}/payload")
    pretty = json.dumps(json.loads(payload), indent=2) if payload else None
    return render_template("payload.html", d=row, payload=pretty)


@console.post("/deliveries/<int(max=9007199254740991):delivery_id>/resend")
def resend(delivery_id: int) -> Any:
    """Requeue one dead letter."""
    try:
        delivery_service.retry_delivery(runtime(), delivery_id)
        flash(f"Delivery {delivery_id} is queued again.", "ok")
    except delivery_service.DeliveryNotFound:
        abort(404)
    except delivery_service.NotRetryable as exc:
        flash(str(exc), "error")
    return redirect(url_for("console.delivery", delivery_id=delivery_id))


@console.post("/deliveries/resend-dead")
def resend_dead() -> Any:
    """Requeue every dead letter (of one partner when chosen)."""
    rt = runtime()
    partner = request.form.get("partner") or None
    done = 0
    for _ in range(1000):  # pages of 200; bounded even if rows keep dying meanwhile
        dead = delivery_service.list_deliveries(
            rt, delivery_service.DeliveryQuery(partner_key=partner, status="dead", limit=200)
        )
        for row in dead:
            try:
                delivery_service.retry_delivery(rt, row.pk)
                done += 1
            except delivery_service.NotRetryable:
                continue  # requeued by someone else meanwhile
        if len(dead) < 200:
            break
    flash(f"{done} dead letter(s) queued again.", "ok")
    return redirect(url_for("console.deliveries", status="pending"))


@console.get("/partners")
@requires_admin
def partners() -> str:
    """Partners (where the bridge delivers) and API clients (who may call the bridge)."""
    rt = runtime()
    return render_template(
        "partners.html",
        partners=[partner_service.partner_view(p) for p in partner_service.list_partners(rt)],
        clients=[c.public() for c in client_service.list_clients(rt)],
    )


@console.route("/partners/new", methods=["GET", "POST"])
@requires_admin
def partner_new() -> Any:
    """Register a partner (physician EHR or payer) through ``services.partners``."""
    if request.method == "GET":
        return render_template("partner_new.html", form={}, problems=[])
    form = request.form
    spec = partner_service.PartnerSpec(
        key=form.get("key", "").strip(),
        name=form.get("name", "").strip(),
        kind=form.get("kind", ""),
        base_url=form.get("base_url", "").strip(),
        auth_kind=form.get("auth_kind", "none"),
        identifiers=[form["identifier"].strip()] if form.get("identifier", "").strip() else [],
        token_env=form.get("token_env", "").strip() or None,
    )
    try:
        valid = partner_service.validate(spec, payer_id_system=runtime().settings.payer_id_system)
        partner_service.add_partner(runtime(), valid)
    except partner_service.PartnerInvalid as exc:
        problems = [f"{p.field}: {p.message}" for p in exc.problems]
        return render_template("partner_new.html", form=form, problems=problems), 422
    except partner_service.PartnerExists as exc:
        return render_template("partner_new.html", form=form, problems=[str(exc)]), 409
    for note in valid.warnings:
        flash(note, "info")
    flash(f"Partner {spec.key} registered.", "ok")
    return redirect(url_for("console.partners"))


@console.post("/partners/<key>/<any(enable, disable):change>")
@requires_admin
def partner_enable(key: str, change: str) -> Any:
    """Enable or disable a partner."""
    try:
        partner_service.set_enabled(runtime(), key, change == "enable")
    except partner_service.UnknownPartner:
        abort(404)
    flash(f"Partner {key} {change}d.", "ok")
    return redirect(url_for("console.partners"))


@console.post("/partners/<key>/test")
@requires_admin
def partner_test(key: str) -> Any:
    """Test the partner's connection: auth, then its CapabilityStatement."""
    try:
        result = partner_check.check_partner(runtime(), key)
    except partner_service.UnknownPartner:
        abort(404)
    flash(f"{key}: {result.message}", "ok" if result.ok else "error")
    return redirect(url_for("console.partners"))


@console.route("/clients/new", methods=["GET", "POST"])
@requires_admin
def client_new() -> Any:
    """Register an API client; with "generate", the console makes its ES384 key pair."""
    if request.method == "GET":
        return render_template("client_new.html", form={}, problem=None, roles=CLIENT_ROLES)
    form = request.form
    client_id = form.get("client_id", "").strip()
    private_pem = jwks = None
    jwks_text = form.get("jwks", "").strip() or None
    if form.get("keys") == "generate":
        kid = f"{client_id}-{secrets.token_hex(4)}"
        private_pem, jwks = es384_key_pair(kid)
        jwks_text = json.dumps(jwks)
    try:
        client_service.add_client(
            runtime(),
            client_id=client_id,
            name=form.get("name", "").strip() or client_id,
            role=form.get("role", ""),
            organization=form.get("organization", "").strip() or None,
            scopes=form.get("scopes", "").strip() or None,
            jwks_text=jwks_text,
            jwks_url=form.get("jwks_url", "").strip() or None,
        )
    except client_service.ClientSpecError as exc:
        return render_template(
            "client_new.html", form=form, problem=str(exc), roles=CLIENT_ROLES
        ), 422
    except ClientExists:
        problem = f"A client {client_id} is already registered"
        return render_template(
            "client_new.html", form=form, problem=problem, roles=CLIENT_ROLES
        ), 409
    return render_template(
        "client_created.html",
        client_id=client_id,
        private_pem=private_pem,
        jwks=json.dumps(jwks, indent=2) if jwks else None,
        token_url=runtime().settings.public_base_url.rstrip("/") + "/auth/token",
    )


@console.post("/clients/<client_id>/<any(enable, disable):change>")
@requires_admin
def client_enable(client_id: str, change: str) -> Any:
    """Enable or disable an API client."""
    if not client_service.set_enabled(runtime(), client_id, change == "enable"):
        abort(404)
    flash(f"Client {client_id} {change}d.", "ok")
    return redirect(url_for("console.partners"))


@console.get("/payer-requests")
@requires_admin
def payer_requests() -> str:
    """Payers' CDex data requests (Tasks) and how each was answered."""
    tasks = queries.payer_requests(runtime())
    audit_access("search", "Task", query="console:payer-requests")
    return render_template("payer_requests.html", rows=[_request_row(t) for t in tasks])


def _request_row(task: dict[str, Any]) -> dict[str, Any]:
    code = (task.get("code", {}).get("coding") or [{}])[0].get("code", "")
    asked = [
        i.get("valueString")
        or (i.get("valueCodeableConcept", {}).get("coding") or [{}])[0].get("code", "")
        for i in task.get("input", [])
    ]
    answers = [o.get("valueReference", {}).get("reference", "") for o in task.get("output", [])]
    return {
        "id": task.get("id"),
        "authored": task.get("authoredOn"),
        "requester": task.get("requester", {}).get("reference")
        or task.get("requester", {}).get("display", "-"),
        "kind": code.removeprefix("data-request-") or "data-request",
        "asked": [a for a in asked if a],
        "status": task.get("status"),
        "reason": task.get("statusReason", {}).get("text", ""),
        "answers": [a for a in answers if a],
    }


@console.route("/audit", methods=["GET", "POST"])
@requires_admin
def audit_log() -> str:
    """AuditEvents newest first; filters (POSTed: a patient id stays out of URLs)."""
    form = request.form if request.method == "POST" else {}
    patient = form.get("patient", "").strip().removeprefix("Patient/") or None
    client = form.get("client", "").strip() or None
    try:
        day = date.fromisoformat(form["day"]) if form.get("day") else None
    except ValueError:
        day = None
    events = queries.recent_audit_events(runtime(), patient_id=patient, client_id=client, on=day)
    audit_access("search", "AuditEvent", query="console:audit")
    return render_template("audit.html", events=[_audit_row(e) for e in events], form=form)


#: DICOM 110122 "Login" (token requests and console logins), by its name
_SUBTYPES = {"110122": "login"}


def _audit_row(event: dict[str, Any]) -> dict[str, Any]:
    code = (event.get("subtype") or [{}])[0].get("code")
    agent = (event.get("agent") or [{}])[0]
    entity = (event.get("entity") or [{}])[0]
    what = entity.get("what", {})
    query = entity.get("query")
    return {
        "recorded": event.get("recorded"),
        "who": agent.get("who", {}).get("identifier", {}).get("value", "-"),
        "type": _SUBTYPES.get(code, code) or event.get("type", {}).get("display"),
        "what": what.get("reference") or what.get("display") or "",
        "query": base64.b64decode(query).decode("utf-8", "replace") if query else "",
        "outcome": {"0": "success", "4": "refused", "8": "failed"}.get(
            event.get("outcome", ""), event.get("outcome")
        ),
        "detail": event.get("outcomeDesc", ""),
        "address": agent.get("network", {}).get("address", ""),
    }
