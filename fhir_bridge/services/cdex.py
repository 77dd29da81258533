"""Answering Da Vinci CDex Task Data Requests at once, with the requester's own scope.

The Task is stored (with the inbound payload kept as received) already answered: completed
with a contained result, or rejected with the reason. A patient the requester may not see is
reported exactly like an unknown one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.bundles import searchset
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.fhir.search_params import SEARCH_PARAMS
from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.mapping import cdex
from fhir_bridge.mapping.clinical_note import ChartExtract, document_reference, note_html
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.security.principal import Principal
from fhir_bridge.services.fhir_write import (
    Inbound,
    WriteResult,
    keep_inbound,
    read_resource,
    require_valid,
)
from fhir_bridge.services.report_lookup import filed_reports
from fhir_bridge.services.resources import check_visible
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.errors import ResourceNotFound
from fhir_bridge.store.member_scope import COMPARTMENT_TYPES, MemberScope
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.search import run_search

NOT_AVAILABLE = (
    "No patient matching Task.for is available to this requester (unknown, or not a member)"
)
MAX_RESULTS = 1000
#: what a clinical note shows: the requester's token must read every one of them
NOTE_TYPES = ("Patient", "ServiceRequest", "Procedure", "Observation", "Goal")
_PATIENT_PARAMS = {"patient", "subject", "beneficiary", "for", "_id"}
#: document codes answered with the latest filed report (``services.report_documents``); a
#: progress note falls back to a note written on the spot, a discharge summary exists only filed
FILED_TYPES = {"11506-3": "Progress note", "18842-5": "Discharge summary"}


def is_data_request_body(body: bytes) -> bool:
    """True when the body parses as a CDex data-request Task."""
    try:
        payload = jsonio.loads(body)
    except jsonio.JsonError:
        return False
    return isinstance(payload, dict) and cdex.is_data_request(payload)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _resolve_patient(session: Session, request: cdex.DataRequest, scope: MemberScope) -> str | None:
    if request.patient_reference:
        pid = request.patient_reference.split("/", 1)[1]
        try:
            check_visible(session, scope, "Patient", pid)
        except ResourceNotFound:
            return None
        return pid
    ident = request.patient_identifier or {}
    if not ident.get("value"):
        return None  # a Patient URL on another server, with no identifier to find it here by
    token = f"{ident.get('system')}|{ident['value']}" if ident.get("system") else ident["value"]
    patients = run_search(session, parse_search("Patient", [("identifier", token)]), scope)
    if len(patients.matches) == 1:
        return patients.matches[0].resource_id
    # a member number: the requester's own coverages only (the scope), by system, then by value
    # alone, since a payer may spell its member-id system differently from the clinic
    for coverage_token in dict.fromkeys([token, ident["value"]]):
        query = parse_search("Coverage", [("identifier", coverage_token)])
        coverages = run_search(session, query, scope).matches
        beneficiaries = {c.resource.get("beneficiary", {}).get("reference", "") for c in coverages}
        if len(beneficiaries) == 1:
            ref = beneficiaries.pop()
            return ref.split("/", 1)[1] if ref.startswith("Patient/") else None
    return None


def _query_result(
    session: Session,
    query: str,
    patient_id: str,
    scope: MemberScope,
    principal: Principal,
    base: str,
) -> dict[str, Any] | str:
    """The searchset Bundle, or the reason the query is refused."""
    resource_type, _, qs = query.lstrip("/").partition("?")
    if resource_type not in SEARCH_PARAMS or resource_type not in (COMPARTMENT_TYPES | {"Patient"}):
        return f"Queries on {resource_type or 'nothing'} are not supported: ask for patient records"
    if not principal.may(resource_type, "search"):
        return f"The requester's scopes do not allow searching {resource_type}"
    params = [(k, v) for k, v in parse_qsl(qs, keep_blank_values=True) if k not in _PATIENT_PARAMS]
    params.append(
        ("_id", patient_id) if resource_type == "Patient" else ("patient", f"Patient/{patient_id}")
    )
    params.append(("_count", str(MAX_RESULTS)))
    try:
        parsed = parse_search(resource_type, params)
    except FhirError as exc:
        return f"The query is not valid: {exc}"
    page = run_search(session, parsed, scope)
    return searchset(
        base_url=base,
        self_link=f"{base}/{resource_type}?{qs}" if qs else f"{base}/{resource_type}",
        matches=page.matches,
        included=page.included,
        total=len(page.matches),
        parse=jsonio.loads,
    )


def _extract(session: Session, patient_id: str, scope: MemberScope) -> ChartExtract:
    store = ResourceStore(session)

    def all_of(rtype: str) -> list[dict[str, Any]]:
        query = parse_search(
            rtype, [("patient", f"Patient/{patient_id}"), ("_count", str(MAX_RESULTS))]
        )
        return [m.resource for m in run_search(session, query, scope).matches]

    return ChartExtract(
        patient=store.read("Patient", patient_id).resource,
        service_requests=all_of("ServiceRequest"),
        procedures=all_of("Procedure"),
        observations=all_of("Observation"),
        goals=all_of("Goal"),
    )


def receive(
    runtime: Runtime,
    inbound: Inbound,
    principal: Principal,
    scope: MemberScope,
    *,
    clinic_name: str,
    tables: MappingTables | None = None,
) -> WriteResult:
    """Take in a CDex data-request Task, answer it, store it answered (``tables``: the app's
    mappings, for the note's measures)."""
    task = read_resource(inbound.body, "Task")
    require_valid(task, runtime.settings.fhir_base_url)
    try:
        request = cdex.read_request(task, own_base=runtime.settings.fhir_base_url)
    except cdex.RequestProblem as exc:
        raise FhirError(422, error("invalid", str(exc), exc.expression)) from None
    now = _now()
    base = runtime.settings.fhir_base_url
    if principal.organization:
        task = {
            **task,
            "requester": {**(task.get("requester") or {}), "reference": principal.organization},
        }
    with read_session(runtime.sessions) as session:
        # naming the patient is not reading it: membership decides, whatever types the token reads
        patient_id = (
            None
            if request.unsupported
            else _resolve_patient(session, request, replace(scope, readable=None))
        )
        if request.unsupported:  # a kind of request the bridge does not answer: say so
            answer = cdex.refused(
                _unlinked(task), status="rejected", reason=request.unsupported, now=now
            )
        elif patient_id is None:
            answer = cdex.refused(_unlinked(task), status="rejected", reason=NOT_AVAILABLE, now=now)
        else:
            task = {**task, "for": {**task["for"], "reference": f"Patient/{patient_id}"}}
            answer = _answer(
                session,
                request,
                task,
                patient_id,
                scope,
                principal,
                base,
                clinic_name,
                now,
                tables,
                runtime.settings.clinic_system_base,
            )
    if answer["status"] != "completed":
        answer = _unlinked(answer)  # a refusal discloses nothing and joins no compartment
        patient_id = None
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        keep_inbound(store, inbound)
        result = WriteResult(store.create(answer), True)
    disclosed = (patient_id,) if patient_id else ()
    return replace(result, disclosed_patients=disclosed)


def _contained(stored: StoredResource) -> dict[str, Any]:
    """A filed report as a contained resource: the stored body, versioned by its identifier
    (a contained resource carries no ``meta.versionId``/``lastUpdated``)."""
    body = dict(stored.resource)
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k == "profile"}
    body.pop("meta", None)
    if meta:
        body["meta"] = meta
    return body


def _unlinked(task: dict[str, Any]) -> dict[str, Any]:
    """The Task without a literal link to a patient: a refused request stays with its requester
    (the payer's own ``for`` identifier is kept; the inbound payload keeps the whole request)."""
    subject = task.get("for")
    if not isinstance(subject, dict) or "reference" not in subject:
        return task
    kept = {k: v for k, v in subject.items() if k in ("identifier", "display", "type")}
    out = {k: v for k, v in task.items() if k != "for"}
    if kept:
        out["for"] = kept
    return out


def _answer(
    session: Session,
    request: cdex.DataRequest,
    task: dict[str, Any],
    patient_id: str,
    scope: MemberScope,
    principal: Principal,
    base: str,
    clinic_name: str,
    now: str,
    tables: MappingTables | None = None,
    clinic_system_base: str = "",
) -> dict[str, Any]:
    if request.kind == "query":
        result = _query_result(session, request.query or "", patient_id, scope, principal, base)
        if isinstance(result, str):
            return cdex.refused(task, status="rejected", reason=result, now=now)
        return cdex.answered(
            task, contained=result, business_status="Query results attached", now=now
        )
    code = request.code
    # a filed report (progress note, discharge summary) answers as filed, PDF and HTML
    if code in FILED_TYPES:
        filed = filed_reports(session, scope, clinic_system_base, patient_id=patient_id, code=code)
        if filed:
            return cdex.answered(
                task, contained=_contained(filed[0]), business_status="Document attached", now=now
            )
        if code not in cdex.DOCUMENT_TYPES:
            reason = f"No {FILED_TYPES[code].lower()} is on file for this patient"
            return cdex.refused(task, status="rejected", reason=reason, now=now)
    unreadable = [t for t in NOTE_TYPES if not scope.reads(t)]
    if unreadable:
        return cdex.refused(
            task,
            status="rejected",
            reason=f"The requester's scopes do not allow reading {', '.join(unreadable)}",
            now=now,
        )
    if code not in cdex.DOCUMENT_TYPES:
        supported = ", ".join(sorted({*cdex.DOCUMENT_TYPES, *FILED_TYPES}))
        return cdex.refused(
            task,
            status="rejected",
            reason=f"Unsupported document type; supported LOINC: {supported}",
            now=now,
        )
    extract = _extract(session, patient_id, scope)
    html_text = note_html(code, extract, clinic_name=clinic_name, written_at=now, tables=tables)
    doc = document_reference(
        code,
        html_text,
        patient_reference=f"Patient/{patient_id}",
        author_reference=None,
        written_at=now,
    )
    return cdex.answered(task, contained=doc, business_status="Document attached", now=now)
