"""Data for a referral's progress report: one read transaction gathers the episode.

The episode of a referral (ServiceRequest) is its visits (Procedures ``basedOn`` it), the
Observations taken in them (``partOf``) or based on the referral, the Goals they pertain to,
the patient, the prescriber and the diagnoses. Everything else (the outcome engine, the
report's layout) is pure and lives in ``fhir_bridge.mapping.outcomes`` and
``fhir_bridge.reports``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_bridge.fhir.outcome import FhirError, error
from fhir_bridge.mapping.clinical import PERTAINS_TO_GOAL
from fhir_bridge.mapping.tables import MappingTables
from fhir_bridge.reports.model import Episode, Report, build_report
from fhir_bridge.services.runtime import Runtime
from fhir_bridge.store.db import read_session
from fhir_bridge.store.repository import ResourceStore


def _ids(resources: list[dict[str, Any]], rtype: str, *paths: str) -> set[str]:
    out = set()
    for res in resources:
        for path in paths:
            value = res.get(path)
            for ref in value if isinstance(value, list) else [value]:
                target = ref.get("reference", "") if isinstance(ref, dict) else ""
                if target.startswith(f"{rtype}/"):
                    out.add(target.split("/", 1)[1])
    return out


def _goal_ids(resources: list[dict[str, Any]]) -> set[str]:
    ids = set()
    for res in resources:
        for ext in res.get("extension", []) or []:
            ref = (ext.get("valueReference") or {}).get("reference", "")
            if ext.get("url") == PERTAINS_TO_GOAL and ref.startswith("Goal/"):
                ids.add(ref.split("/", 1)[1])
    return ids


def gather_episode(runtime: Runtime, referral_id: str) -> Episode:
    """The referral's episode as stored; 404 OperationOutcome when there is no such referral."""
    with read_session(runtime.sessions) as session:
        return episode_in(ResourceStore(session), referral_id)


def episode_in(store: ResourceStore, referral_id: str) -> Episode:
    """``gather_episode`` in the caller's transaction (a write sees its own visit)."""
    found = store.get("ServiceRequest", referral_id)
    if found is None or found.deleted:
        raise FhirError(404, error("not-found", "No referral with that id", "id"))
    sr = found.resource
    sr_ref = f"ServiceRequest/{referral_id}"
    procedures = [
        p.resource
        for p in store.search_references("Procedure", "based-on", sr_ref)
        if p.resource.get("status") != "entered-in-error"
    ]
    proc_refs = [f"Procedure/{p['id']}" for p in procedures]
    observations: dict[str, dict[str, Any]] = {}
    for group in store.referencing_many("Observation", "part-of", proc_refs).values():
        observations.update({o.resource_id: o.resource for o in group})
    for o in store.search_references("Observation", "based-on", sr_ref):
        observations.setdefault(o.resource_id, o.resource)
    obs = list(observations.values())
    keys = [("Goal", i) for i in sorted(_goal_ids(procedures + obs))]
    keys += [("Condition", i) for i in sorted(_ids([sr], "Condition", "reasonReference"))]
    keys += [("Patient", i) for i in _ids([sr], "Patient", "subject")]
    keys += [("Practitioner", i) for i in _ids([sr], "Practitioner", "requester")]
    performers = [p.get("actor", {}) for proc in procedures for p in proc.get("performer", [])]
    keys += [("Practitioner", i) for i in sorted(_ids([{"a": performers}], "Practitioner", "a"))]
    others = store.get_many(keys)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for (rtype, _), res in sorted(others.items()):
        if not res.deleted:
            by_type.setdefault(rtype, []).append(res.resource)
    patients = by_type.get("Patient", [])
    return Episode(
        service_request=sr,
        patient=patients[0] if patients else {},
        practitioners={p["id"]: p for p in by_type.get("Practitioner", [])},
        conditions=by_type.get("Condition", []),
        procedures=procedures,
        observations=obs,
        goals=by_type.get("Goal", []),
    )


def generated_label(at: datetime) -> str:
    """How a report prints the time it was made (``2026-11-30 12:00 UTC``)."""
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def referral_report(
    runtime: Runtime, tables: MappingTables, referral_id: str, kind: str
) -> tuple[Episode, Report]:
    """The report of ``kind`` for a referral as it stands now (404 when there is none); the
    one helper behind the API route and the console page."""
    episode = gather_episode(runtime, referral_id)
    report = build_report(
        episode,
        tables,
        kind=kind,
        clinic=runtime.settings.clinic_name,
        generated_at=generated_label(datetime.now(UTC)),
    )
    return episode, report


def pdf_disposition(kind: str, referral_id: str) -> str:
    """``Content-Disposition`` of a report PDF: a download named by ids only (no name or MRN
    lands in a downloads folder's listing)."""
    return f'attachment; filename="{kind}-report-{referral_id}.pdf"'
