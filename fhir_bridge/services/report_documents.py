"""Filing a referral's progress report or discharge summary as a DocumentReference.

Runs inside the write transaction of what makes a report due, so the report, its outbox event
and the write that caused it commit together or not at all:

* a documented visit (``services.sessions``) that brings the referral's visits used to a
  multiple of ``FHIR_BRIDGE_REPORT_EVERY_VISITS`` files a progress report (LOINC 11506-3);
* completing the referral (``services.referrals.act``) files the discharge summary (18842-5).

The DocumentReference's identifier (``<clinic base>/report`` | ``<referral>/<kind>``) and the
id derived from it never change, so a regenerated report is a new version of the same resource
and a retry of the triggering write (which repeats nothing: a replayed visit is a no-op, a
completed referral cannot be completed again) never adds one. A new version writes a
``report.generated`` outbox event (one per version), which routing sends to the referring
physician and to a payer that asks for that event type. The rendering (~0.1 s for 24 visits)
happens under the write lock; that is what makes the report and its trigger atomic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.mapping.report_document import report_document_reference
from fhir_bridge.mapping.tables import MappingTables, load_tables
from fhir_bridge.reports.html import render_html
from fhir_bridge.reports.model import Episode, build_report
from fhir_bridge.reports.pdf import render_pdf
from fhir_bridge.services.progress_report import episode_in, generated_label
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.settings import Settings
from fhir_bridge.store.db import write_session
from fhir_bridge.store.outbox import OutboxWriter
from fhir_bridge.store.referrals import ReferralStore
from fhir_bridge.store.repository import ResourceStore, StoredResource

REPORT_EVENT = "report.generated"


def configured_tables(settings: Settings) -> MappingTables:
    """The mapping tables of ``FHIR_BRIDGE_MAPPINGS_DIR`` (or the shipped ones), loaded once."""
    return _tables(settings.mappings_dir)


@lru_cache(maxsize=4)
def _tables(folder: str) -> MappingTables:
    return load_tables(Path(folder) if folder else None)


def report_due(visits_used: int, every: int) -> bool:
    """Is a progress report due after the visit that made ``visits_used``? (``every`` 0: never)"""
    return every > 0 and visits_used > 0 and visits_used % every == 0


def after_visit(
    store: ResourceStore,
    service_request_id: str,
    *,
    tables: MappingTables,
    settings: Settings,
    now: datetime,
) -> StoredResource | None:
    """File the progress report when the visit just counted makes one due."""
    row = ReferralStore(store.session).get(service_request_id)
    # a referral loaded by the clinic has no inbox row: its visits are counted as the inbox does
    used = row.visits_used if row is not None else _visits_on_file(store, service_request_id)
    if not report_due(used, settings.report_every_visits):
        return None
    return file_report(
        store, service_request_id, "progress", tables=tables, settings=settings, now=now
    )


def file_report_now(
    runtime: Runtime, tables: MappingTables, service_request_id: str, kind: str
) -> StoredResource:
    """File the report of ``kind`` on demand, in a transaction of its own; 404 for an unknown
    referral, 409 when it has no visit yet."""
    with write_session(runtime.sessions) as session:
        store = ResourceStore(session)
        found = store.get("ServiceRequest", service_request_id)
        if found is None or found.deleted:
            raise FhirError(404, error("not-found", "No referral with that id", "id"))
        stored = file_report(
            store,
            service_request_id,
            kind,
            tables=tables,
            settings=runtime.settings,
            now=datetime.now(UTC),
        )
    if stored is None:
        raise FhirError(
            409, error("business-rule", "The referral has no visit to report on yet", "id")
        )
    return stored


def _visits_on_file(store: ResourceStore, service_request_id: str) -> int:
    procedures = store.search_references(
        "Procedure", "based-on", f"ServiceRequest/{service_request_id}"
    )
    return sum(1 for p in procedures if p.resource.get("status") != "entered-in-error")


def file_report(
    store: ResourceStore,
    service_request_id: str,
    kind: str,
    *,
    tables: MappingTables,
    settings: Settings,
    now: datetime,
) -> StoredResource | None:
    """Render the report of ``kind`` and store it as the next version of its DocumentReference
    (None when there is no ServiceRequest, no visit or no Patient to report on); emits
    ``report.generated``."""
    found = store.get("ServiceRequest", service_request_id)
    if found is None or found.deleted:
        return None  # nothing to report on (completing a referral still works)
    episode = episode_in(store, service_request_id)
    subject = str(episode.service_request.get("subject", {}).get("reference", ""))
    if not episode.procedures or not subject.startswith("Patient/"):
        return None
    at = now if now.tzinfo else now.replace(tzinfo=UTC)
    report = build_report(
        episode, tables, kind=kind, clinic=settings.clinic_name, generated_at=generated_label(at)
    )
    doc = report_document_reference(
        kind=kind,
        clinic_system_base=settings.clinic_system_base,
        referral_id=service_request_id,
        patient_reference=subject,
        author_reference=_therapist(episode),
        procedure_ids=[str(p["id"]) for p in _by_time(episode)],
        observation_ids=sorted(
            str(o["id"]) for o in episode.observations if o.get("status") != "entered-in-error"
        ),
        period=_period(episode),
        pdf=render_pdf(report),
        html=render_html(report),
        generated_at=at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    identifier = doc["identifier"][0]
    stored, _ = store.update(doc, claim_identifiers=[(identifier["system"], identifier["value"])])
    OutboxWriter(store.session).emit(
        REPORT_EVENT,
        stored,
        at=at.astimezone(UTC).replace(tzinfo=None),
        patient_id=subject.removeprefix("Patient/"),
        detail={"kind": kind, "service_request": f"ServiceRequest/{service_request_id}"},
    )
    return stored


def _by_time(episode: Episode) -> list[dict]:
    return sorted(episode.procedures, key=_start)


def _start(procedure: dict) -> str:
    return str(
        procedure.get("performedDateTime")
        or (procedure.get("performedPeriod") or {}).get("start")
        or ""
    )


def _period(episode: Episode) -> tuple[str, str] | None:
    """From the first visit's start to the last visit's end."""
    visits = _by_time(episode)
    first, last = _start(visits[0]), visits[-1]
    end = str((last.get("performedPeriod") or {}).get("end") or _start(last))
    return (first, end) if first and end else None


def _therapist(episode: Episode) -> str | None:
    """The Practitioner who performed the latest visit."""
    for procedure in reversed(_by_time(episode)):
        for performer in procedure.get("performer") or []:
            ref = (performer.get("actor") or {}).get("reference")
            if isinstance(ref, str) and ref.startswith("Practitioner/"):
                return ref
    return None
