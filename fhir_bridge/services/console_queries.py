"""What the clinic console reads, composed from the existing repositories and services.

Reads only: every action the console takes goes through the API's own services
(``services.referrals.act``, ``services.deliveries.retry_delivery``, ``services.clients``,
``services.partners``). Searches use the FHIR search engine with the clinic's scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_bridge.fhir.search_query import parse_search
from fhir_bridge.services import resources
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store import console_views as views
from fhir_bridge.store.db import read_session
from fhir_bridge.store.deliveries import DeliveryRow, DeliveryStore
from fhir_bridge.store.member_scope import MemberScope
from fhir_bridge.store.referrals import ReferralFilter, ReferralRow, ReferralStore
from fhir_bridge.store.repository import ResourceStore
from fhir_bridge.store.sessions import SessionStore, StoredSession

#: the clinic's own staff see every patient (as the API's clinic role does)
CLINIC_SCOPE = MemberScope("all")
EXPIRY_WARNING_DAYS = 14
FEW_VISITS_LEFT = 1
MAX_OBSERVATIONS = 1000


@dataclass(frozen=True)
class Today:
    """The Today page: what needs someone's attention."""

    new_referrals: list[ReferralRow]
    documented_today: list[StoredSession]
    documented_today_count: int
    failing_deliveries: list[DeliveryRow]
    running_out: list[ReferralRow]
    patients: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PatientFile:
    """A patient's page: the Patient, referrals, visits, deliveries, Observations and Goals."""

    patient: dict[str, Any]
    mrn: str | None
    referrals: list[ReferralRow]
    visits: list[StoredSession]
    deliveries: list[DeliveryRow]
    observations: list[dict[str, Any]]
    goals: list[dict[str, Any]]


def utcnow() -> datetime:
    """Naive UTC, as the store keeps times."""
    return datetime.now(UTC).replace(tzinfo=None)


def _patients(session: Any, ids: set[str]) -> dict[str, dict[str, Any]]:
    found = ResourceStore(session).get_many(("Patient", i) for i in sorted(ids))
    return {key[1]: stored.resource for key, stored in found.items()}


def today(runtime: Runtime, *, now: datetime | None = None, limit: int = 20) -> Today:
    """Everything on the Today page, in one read transaction."""
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with read_session(runtime.sessions) as session:
        new = ReferralStore(session).list(ReferralFilter(status="requested", limit=limit))
        documented = views.sessions_documented_since(session, midnight, limit)
        count = views.count_sessions_documented_since(session, midnight)
        failing = views.failing_deliveries(session, limit)
        running_out = views.referrals_running_out(
            session,
            expiring_by=now.date() + timedelta(days=EXPIRY_WARNING_DAYS),
            visits_left_at_most=FEW_VISITS_LEFT,
            limit=limit,
        )
        ids = {r.patient_id for r in [*new, *running_out] if r.patient_id}
        patients = _patients(session, ids)
    return Today(new, documented, count, failing, running_out, patients)


def referral_inbox(
    runtime: Runtime, *, status: str | None, after_pk: int | None, limit: int
) -> tuple[list[ReferralRow], dict[str, dict[str, Any]]]:
    """Inbox rows (arrival order) with their patients."""
    with read_session(runtime.sessions) as session:
        rows = ReferralStore(session).list(
            ReferralFilter(status=status or None, after_pk=after_pk, limit=limit)
        )
        patients = _patients(session, {r.patient_id for r in rows if r.patient_id})
    return rows, patients


def referral_resources(runtime: Runtime, row: ReferralRow) -> dict[str, dict[str, Any] | None]:
    """The referral's ServiceRequest, Task and Patient as stored (None when missing)."""
    keys = [("ServiceRequest", row.service_request_id), ("Task", row.task_id)]
    if row.patient_id:
        keys.append(("Patient", row.patient_id))
    with read_session(runtime.sessions) as session:
        found = ResourceStore(session).get_many(keys)
    return {k[0]: (found[k].resource if k in found else None) for k in keys}


def referral_history(runtime: Runtime, row: ReferralRow) -> list[dict[str, Any]]:
    """Every version of the referral's ServiceRequest, oldest first (what changed on re-sends)."""
    versions = resources.history(runtime, "ServiceRequest", row.service_request_id, CLINIC_SCOPE)
    return [v.resource for v in reversed(versions)]


def search_patients(runtime: Runtime, text: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """Patients whose name starts with ``text`` (FHIR ``name``), or whose MRN is ``text``."""
    text = text.strip()
    if not text:
        return []
    mrn_system = f"{runtime.settings.clinic_system_base}/mrn"
    found: dict[str, dict[str, Any]] = {}
    queries = [
        [("identifier", f"{mrn_system}|{_escape(text)}")],
        [("name", _escape(text))],
    ]
    for params in queries:
        page = resources.search(
            runtime, parse_search("Patient", [*params, ("_count", str(limit))]), CLINIC_SCOPE
        )
        for stored in page.matches:
            found.setdefault(stored.resource_id, stored.resource)
    return list(found.values())[:limit]


def _escape(value: str) -> str:
    """FHIR search escaping of ``\\``, ``,``, ``$`` and ``|`` in a value."""
    for ch in ("\\", ",", "$", "|"):
        value = value.replace(ch, "\\" + ch)
    return value


def mrn_of(patient: dict[str, Any], mrn_system: str) -> str | None:
    """The patient's clinic MRN, if it has one."""
    for ident in patient.get("identifier", []):
        if ident.get("system") == mrn_system and ident.get("value"):
            return str(ident["value"])
    return None


def patient_file(runtime: Runtime, patient_id: str, *, visits: int = 200) -> PatientFile:
    """A patient's page; ResourceNotFound when there is no such patient."""
    patient = resources.read(runtime, "Patient", patient_id, CLINIC_SCOPE).resource
    mrn = mrn_of(patient, f"{runtime.settings.clinic_system_base}/mrn")
    with read_session(runtime.sessions) as session:
        referrals = ReferralStore(session).list(ReferralFilter(patient_id=patient_id, limit=100))
        stored = (
            SessionStore(session).list(patient_mrn=mrn, since=None, after_pk=None, limit=visits)
            if mrn
            else []
        )
        deliveries = DeliveryStore(session).list(patient_id=patient_id, newest_first=True, limit=50)
    observations = _all(runtime, "Observation", patient_id)
    goals = _all(runtime, "Goal", patient_id)
    return PatientFile(patient, mrn, referrals, stored, deliveries, observations, goals)


def _all(runtime: Runtime, resource_type: str, patient_id: str) -> list[dict[str, Any]]:
    query = parse_search(
        resource_type, [("patient", patient_id), ("_count", str(MAX_OBSERVATIONS))]
    )
    return [s.resource for s in resources.search(runtime, query, CLINIC_SCOPE).matches]


def visit_deliveries(runtime: Runtime, resources_made: list[dict[str, Any]]) -> list[DeliveryRow]:
    """Deliveries of a visit: those of its Procedure's outbox events."""
    procedure = next((r for r in resources_made if r.get("resourceType") == "Procedure"), None)
    if procedure is None:
        return []
    with read_session(runtime.sessions) as session:
        return views.deliveries_of_resource(session, "Procedure", str(procedure["id"]))


def visit_patient(runtime: Runtime, resources_made: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Patient a visit's resources name, if on file."""
    ref = next((r for r in resources_made if r.get("resourceType") == "Patient"), None)
    if ref is None:
        return None
    with read_session(runtime.sessions) as session:
        found = ResourceStore(session).get("Patient", str(ref["id"]))
    return found.resource if found else None


def recent_audit_events(
    runtime: Runtime,
    *,
    patient_id: str | None = None,
    client_id: str | None = None,
    on: date | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """AuditEvents newest first, by patient, agent (client id or ``user:<name>``) and day."""
    # filtering by agent happens here (the agent is an identifier, not a searchable reference),
    # so read further back only then
    count = MAX_OBSERVATIONS if client_id else limit
    params: list[tuple[str, str]] = [("_sort", "-date"), ("_count", str(count))]
    if patient_id:
        params.append(("entity", f"Patient/{patient_id}"))
    if on:
        params.append(("date", on.isoformat()))
    page = resources.search(runtime, parse_search("AuditEvent", params), MemberScope("admin"))
    events = [s.resource for s in page.matches]
    if client_id:
        events = [e for e in events if client_id in _agent_ids(e)]
    return events[:limit]


def _agent_ids(event: dict[str, Any]) -> set[str]:
    return {
        str(a.get("who", {}).get("identifier", {}).get("value", "")) for a in event.get("agent", [])
    }


#: CDex Task data-request codes (Da Vinci CDex 2.x ``cdex-temp``; HRex ``hrex-temp`` in older
#: examples), as ``mapping.cdex.is_data_request`` recognises them
DATA_REQUEST_CODES = (
    "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp|data-request-query",
    "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp|data-request-code",
    "http://hl7.org/fhir/us/davinci-hrex/CodeSystem/hrex-temp|data-request",
)


def payer_requests(runtime: Runtime, *, limit: int = 50) -> list[dict[str, Any]]:
    """Payers' CDex data-request Tasks and their answers, newest first."""
    codes = ",".join(c.replace(",", "\\,") for c in DATA_REQUEST_CODES)
    query = parse_search(
        "Task", [("code", codes), ("_sort", "-authored-on"), ("_count", str(limit))]
    )
    return [s.resource for s in resources.search(runtime, query, CLINIC_SCOPE).matches]
