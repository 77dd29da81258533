"""Documenting a massage session: keep the record, map it to FHIR, store it all at once.

One transaction holds the inbound payload, the session row and every resource version it
produces; replays and concurrent duplicates of one record converge on the same resources
(stable ids, identifier claims, and a retry when a concurrent writer won a race).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from fhir_bridge.fhir import jsonio
from fhir_bridge.fhir.npi import NPI_SYSTEM
from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.fhir.validation import validate_resource
from fhir_bridge.mapping.clinical import goal_identifier_for
from fhir_bridge.mapping.context import ClinicIdentity, ReferralContext, SessionContext, new_ids
from fhir_bridge.mapping.session import Flag, MappedSession, map_session
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.records.model import SessionRecord
from fhir_bridge.records.schemas import load_session
from fhir_bridge.records.vocabulary import Vocabulary
from fhir_bridge.services.referral_progress import PROGRESS_FLAGS, ReferralProgress
from fhir_bridge.services.report_documents import after_visit
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.services.session_views import get_session as get_session
from fhir_bridge.services.session_views import list_sessions as list_sessions
from fhir_bridge.services.session_views import session_view as session_view
from fhir_bridge.store.db import read_session, write_session
from fhir_bridge.store.errors import DuplicateIdentifier
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.repository import ResourceStore, StoredResource
from fhir_bridge.store.sessions import SessionStore, StoredSession

MAX_ATTEMPTS = 5
TYPE_ORDER = (
    "Patient",
    "Practitioner",
    "Organization",
    "Coverage",
    "Goal",
    "Procedure",
    "Observation",
)


class MappingBug(RuntimeError):
    """The mapping produced a resource that does not validate: a bug, never the client's fault."""


@dataclass(frozen=True)
class SessionOutcome:
    """What a submission did: created or replaced, and the session as now stored."""

    created: bool
    session: StoredSession


def clinic_identity(runtime: Runtime) -> ClinicIdentity:
    """The clinic's identifier systems from settings."""
    return ClinicIdentity(runtime.settings.clinic_system_base, runtime.settings.payer_id_system)


def submit_session(
    runtime: Runtime,
    tables: MappingTables,
    vocabulary: Vocabulary,
    *,
    body: bytes,
    request_id: str | None,
    content_type: str | None,
) -> SessionOutcome:
    """Validate, keep, map and store one session record (create or replace by session_id).

    Raises RecordInvalid (422) for a bad record, FhirError for a body that is not JSON or a
    retraction of an unknown session.
    """
    payload = _parse(body)
    prepared = None
    if not _is_retraction(payload):
        # reject bad input before touching the database
        prepared = _Prepared(load_session(payload, vocabulary=vocabulary))
        if runtime.engine.dialect.name == "sqlite":
            prepared = _prepare(runtime, tables, prepared.record)
    for attempt in range(MAX_ATTEMPTS):
        try:
            with write_session(runtime.sessions) as session:
                return _submit(
                    session,
                    runtime,
                    tables,
                    vocabulary,
                    body,
                    payload,
                    request_id,
                    content_type,
                    prepared,
                )
        except (IntegrityError, DuplicateIdentifier):
            # A concurrent submission created one of our resources first; the next attempt
            # sees it and converges on it.
            if attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Prepared:
    """A record loaded before the write transaction, and maybe mapped and checked as well."""

    record: SessionRecord
    #: the context the mapping was made for; reused only if the transaction sees the same
    ctx: SessionContext | None = None
    mapped: MappedSession | None = None


def _prepare(runtime: Runtime, tables: MappingTables, record: SessionRecord) -> _Prepared:
    """Map and check the record against what is on file now, outside the write transaction.

    SQLite runs one writer at a time, so work done before its write lock is work other
    writers need not wait for. The transaction resolves the context again and uses this
    mapping only if nothing it depends on changed; a mapping that fails is left for the
    transaction to redo (and report) against the context it sees.
    """
    with read_session(runtime.sessions) as session:
        ctx = _context(ResourceStore(session), record, clinic_identity(runtime))
    try:
        mapped = map_session(record, tables, ctx)
        _check(mapped)
    except Exception:  # redone in the transaction, which reports it
        return _Prepared(record)
    return _Prepared(record, ctx, mapped)


def _is_retraction(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("status") == "entered-in-error"


def _parse(body: bytes) -> Any:
    try:
        return jsonio.loads(body)
    except jsonio.JsonError as exc:
        raise FhirError(400, error("structure", str(exc), "$")) from None


def _submit(
    session: Any,
    runtime: Runtime,
    tables: MappingTables,
    vocabulary: Vocabulary,
    body: bytes,
    payload: Any,
    request_id: str | None,
    content_type: str | None,
    prepared: _Prepared | None,
) -> SessionOutcome:
    store = ResourceStore(session)
    sessions = SessionStore(session)
    inbound_pk = store.keep_inbound(
        body=body,
        channel="api/v1/sessions",
        method="POST",
        path="/api/v1/sessions",
        content_type=content_type,
        request_id=request_id,
        sha256=hashlib.sha256(body).hexdigest(),
    )
    session_id = payload.get("session_id") if isinstance(payload, dict) else None
    previous = sessions.get(str(session_id), for_update=True) if session_id else None
    record_bytes = body
    if _is_retraction(payload):
        if previous is None:
            raise FhirError(
                404,
                error(
                    "not-found", "A session that is not on file cannot be retracted", "session_id"
                ),
            )
        # a retraction applies to the record on file, whatever else the retraction carries
        payload = {**jsonio.loads(previous.record), "status": "entered-in-error"}
        record_bytes = jsonio.dumps(payload)
    # a retraction is never prepared: its record is the one on file
    record = (
        prepared.record if prepared is not None else load_session(payload, vocabulary=vocabulary)
    )
    ctx = _context(store, record, clinic_identity(runtime))
    if prepared is not None and prepared.mapped is not None and prepared.ctx == ctx:
        mapped = prepared.mapped  # mapped and checked against this very context
    else:
        mapped = map_session(record, tables, ctx)
        _check(mapped)
    written = _write(store, mapped, ctx)
    if previous is not None:
        _retract_dropped(store, previous, {(r["resourceType"], r["id"]) for r in mapped.resources})
    now = datetime.now(UTC).replace(tzinfo=None)
    flags = [*mapped.flags, *_follow_up(store, ctx, written, record, now, previous)]
    _report_if_due(store, ctx, written, runtime, tables, now, previous)
    created = sessions.save(
        session_id=record.session_id,
        status=record.status,
        patient_mrn=record.patient.mrn,
        started_at=record.started_at.astimezone(UTC).replace(tzinfo=None),
        at=now,
        inbound_payload_pk=inbound_pk,
        record=record_bytes,
        resources=[
            {"resourceType": s.resource_type, "id": s.resource_id, "versionId": s.version_id}
            for s in written
        ],
        flags=[{"code": f.code, "message": f.message} for f in flags],
    )
    stored = sessions.get(record.session_id)
    assert stored is not None
    return SessionOutcome(created=created, session=stored)


def _follow_up(
    store: ResourceStore,
    ctx: SessionContext,
    written: list[StoredResource],
    record: SessionRecord,
    now: datetime,
    previous: StoredSession | None,
) -> list[Flag]:
    """The visit's consequences in the same transaction: referral progress and outbox event.

    A replay that changed nothing (same Procedure version) repeats nothing: no event, no
    progress; the flags already on file stand.
    """
    procedure = next((w for w in written if w.resource_type == "Procedure"), None)
    if procedure is None:
        return []
    if (
        previous is not None
        and {
            "resourceType": "Procedure",
            "id": procedure.resource_id,
            "versionId": procedure.version_id,
        }
        in previous.resources
    ):
        return [
            Flag(f["code"], f["message"]) for f in previous.flags if f["code"] in PROGRESS_FLAGS
        ]
    OutboxWriter(store.session).emit(
        "session.documented",
        procedure,
        at=now,
        patient_id=ctx.patient_id,
        detail={"status": record.status},
    )
    if ctx.referral is None:
        return []
    return ReferralProgress(store, now).visit(
        ctx.referral.service_request_id, procedure, visit_date=record.started_at.date()
    )


def _report_if_due(
    store: ResourceStore,
    ctx: SessionContext,
    written: list[StoredResource],
    runtime: Runtime,
    tables: MappingTables,
    now: datetime,
    previous: StoredSession | None,
) -> None:
    """A changed, counted visit under a referral may make a progress report due."""
    procedure = next((w for w in written if w.resource_type == "Procedure"), None)
    if procedure is None or ctx.referral is None or not _counted(procedure):
        return
    this_version = {
        "resourceType": "Procedure",
        "id": procedure.resource_id,
        "versionId": procedure.version_id,
    }
    if previous is not None and this_version in previous.resources:
        return  # a replay repeats nothing
    after_visit(
        store,
        ctx.referral.service_request_id,
        tables=tables,
        settings=runtime.settings,
        now=now,
    )


def _counted(procedure: StoredResource) -> bool:
    return procedure.resource.get("status") != "entered-in-error"


def _first(found: list[StoredResource]) -> StoredResource | None:
    return found[0] if found else None


def _context(store: ResourceStore, record: SessionRecord, clinic: ClinicIdentity) -> SessionContext:
    """Resolve who and what the record points at: resources on file, else stable new ids."""
    ids = new_ids(record, clinic)
    patient = _first(store.search_by_identifier("Patient", clinic.mrn_system, record.patient.mrn))
    patient_id = patient.resource_id if patient else str(ids["patient_id"])
    therapist = _first(store.search_by_identifier("Practitioner", NPI_SYSTEM, record.therapist.npi))
    payer_org = coverage = None
    if record.patient.coverage:
        info = record.patient.coverage
        payer_org = _first(
            store.search_by_identifier("Organization", clinic.payer_id_system, info.payer_id)
        )
        beneficiary = {"reference": f"Patient/{patient_id}"}
        coverage = _first(
            [
                c
                for c in store.search_by_identifier("Coverage", None, info.member_id)
                if c.resource.get("beneficiary") == beneficiary
            ]
        )
    return SessionContext(
        clinic=clinic,
        patient_id=patient_id,
        practitioner_id=therapist.resource_id if therapist else str(ids["practitioner_id"]),
        existing_patient=patient.resource if patient else None,
        existing_practitioner=therapist.resource if therapist else None,
        payer_organization_id=payer_org.resource_id if payer_org else ids["payer_organization_id"],
        existing_payer_organization=payer_org.resource if payer_org else None,
        coverage_id=coverage.resource_id if coverage else ids["coverage_id"],
        existing_coverage=coverage.resource if coverage else None,
        referral=_referral(store, record),
        goal_start_dates=_goal_start_dates(store, record, clinic),
    )


def _goal_start_dates(
    store: ResourceStore, record: SessionRecord, clinic: ClinicIdentity
) -> dict[str, str]:
    """When the patient's goals named in the record were first set, for goals already on file."""
    found = {}
    for goal in record.goals:
        ident = goal_identifier_for(clinic, record.patient.mrn, goal.goal_id)
        existing = store.find_by_identifier("Goal", ident["system"], ident["value"])
        if existing is not None and "startDate" in existing.resource:
            found[goal.goal_id] = existing.resource["startDate"]
    return found


def _referral(store: ResourceStore, record: SessionRecord) -> ReferralContext | None:
    """The ServiceRequest whose placer identifier the record names, if on file."""
    if record.referral is None:
        return None
    request = _first(
        store.search_by_identifier("ServiceRequest", record.referral.system, record.referral.value)
    )
    if request is None:
        return None
    body = request.resource
    return ReferralContext(
        service_request_id=request.resource_id,
        reason_code=tuple(body.get("reasonCode", [])),
        reason_reference=tuple(body.get("reasonReference", [])),
    )


def _check(mapped: MappedSession) -> None:
    for resource in mapped.resources:
        problems = [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]
        if problems:
            raise MappingBug(
                f"{resource['resourceType']} failed validation: {problems[0].diagnostics}"
            )


def _claims(resource: dict[str, Any], clinic: ClinicIdentity) -> list[tuple[str, str]]:
    owned = {clinic.session_system, clinic.goal_system, clinic.mrn_system}
    return [
        (i["system"], i["value"])
        for i in resource.get("identifier", [])
        if i.get("system") in owned
    ]


def _write(
    store: ResourceStore, mapped: MappedSession, ctx: SessionContext
) -> list[StoredResource]:
    """Store the mapped resources; list them with the on-file resources the session links to."""
    written = [
        stored
        for stored, _ in store.update_many([(r, _claims(r, ctx.clinic)) for r in mapped.resources])
    ]
    produced = {(w.resource_type, w.resource_id) for w in written}
    linked = [
        ("Practitioner", ctx.practitioner_id),
        ("Organization", ctx.payer_organization_id),
        ("Coverage", ctx.coverage_id),
    ]
    for resource_type, resource_id in linked:
        if resource_id and (resource_type, resource_id) not in produced:
            found = store.get(resource_type, resource_id)
            if found is not None:
                written.append(found)
    return sorted(written, key=lambda w: TYPE_ORDER.index(w.resource_type))


def _retract_dropped(
    store: ResourceStore, previous: StoredSession, kept: set[tuple[str, str]]
) -> None:
    """Resources an earlier version of the record produced and this one no longer does."""
    for ref in previous.resources:
        key = (ref["resourceType"], ref["id"])
        if key in kept or ref["resourceType"] not in ("Observation", "Procedure"):
            continue
        current = store.get(*key)
        if current is not None and current.resource.get("status") != "entered-in-error":
            store.update({**current.resource, "status": "entered-in-error"})
