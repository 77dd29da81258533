"""One session's Procedure, Observations and Goals (US Core), as plain dicts (pure)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from fhir_bridge.fhir.ids import stable_id
from fhir_bridge.mapping.billing import BillingLine, units_by_code
from fhir_bridge.mapping.context import ClinicIdentity, SessionContext
from fhir_bridge.mapping.tables import MappingTables, Measure
from fhir_bridge.records.model import Assessment, GoalRecord, SessionRecord, Treatment

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
PERTAINS_TO_GOAL = "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"


def extension_url(tables: MappingTables, name: str) -> str:
    """Canonical URL of one of the bridge's own extensions."""
    return f"{tables.systems.canonical_base}/StructureDefinition/{name}"


def identifier(ctx: SessionContext, record: SessionRecord, role: str) -> dict[str, str]:
    """The business identifier of a resource generated from a session: <session_id>/<role>."""
    return {"system": ctx.clinic.session_system, "value": f"{record.session_id}/{role}"}


def resource_id(resource_type: str, ident: dict[str, str]) -> str:
    """The stable id that belongs to a business identifier."""
    return stable_id(resource_type, ident["system"], ident["value"])


def assessment_role(a: Assessment) -> str:
    """Stable role of an assessment within its session (independent of list order)."""
    return "/".join(["observation", a.phase, a.measure, a.body_site or "-", a.laterality or "-"])


def _laterality_extension(tables: MappingTables, laterality: str) -> dict[str, Any]:
    side = tables.lateralities[laterality]
    codings = [{"system": tables.systems.laterality, "code": side.key, "display": side.display}]
    if side.snomed:
        codings.append(side.snomed.coding())
    return {
        "url": extension_url(tables, "body-site-laterality"),
        "valueCodeableConcept": {"coding": codings, "text": side.display},
    }


def _site_concept(
    tables: MappingTables, site: str | None, laterality: str | None
) -> dict[str, Any] | None:
    """Body site as a CodeableConcept; laterality rides on it as an extension (R4 has no element).

    A laterality without a site (a left cervical rotation) still becomes a bodySite, so the side
    of a measurement is never lost.
    """
    if site is None and laterality is None:
        return None
    concept: dict[str, Any] = {}
    if laterality:
        concept["extension"] = [_laterality_extension(tables, laterality)]
    side = tables.lateralities[laterality].display if laterality else None
    if site is None:
        concept["text"] = f"{side} side"
        return concept
    entry = tables.body_sites[site]
    codings = [{"system": tables.systems.body_site, "code": entry.key, "display": entry.display}]
    if entry.snomed:
        codings.append(entry.snomed.coding())
    concept["coding"] = codings
    concept["text"] = f"{side} {entry.display.lower()}" if side else entry.display
    return concept


def _technique_coding(tables: MappingTables, key: str) -> dict[str, str]:
    entry = tables.techniques[key]
    return {"system": tables.systems.technique, "code": entry.key, "display": entry.display}


def _minutes(value: int) -> dict[str, Any]:
    return {"value": value, "unit": "min", "system": UCUM, "code": "min"}


def _treatment_extension(tables: MappingTables, t: Treatment) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "technique", "valueCoding": _technique_coding(tables, t.technique)}
    ]
    billing = tables.techniques[t.technique].billing
    if billing:
        parts.append({"url": "billingCode", "valueCoding": billing.coding()})
    site = _site_concept(tables, t.body_site, t.laterality)
    if site:
        parts.append({"url": "bodySite", "valueCodeableConcept": site})
    parts.append({"url": "minutes", "valueQuantity": _minutes(t.minutes)})
    return {"url": extension_url(tables, "massage-treatment"), "extension": parts}


def billing_lines(record: SessionRecord, tables: MappingTables) -> list[BillingLine]:
    """Units per CPT code by the 8-minute rule, from the treatments' minutes."""
    timed = [
        (entry.billing.system, entry.billing.code, t.minutes)
        for t in record.treatments
        if (entry := tables.techniques[t.technique]).billing is not None and entry.timed
    ]
    return units_by_code(timed)


def _procedure_code(record: SessionRecord, tables: MappingTables) -> dict[str, Any]:
    codings: list[dict[str, str]] = []
    for t in record.treatments:
        billing = tables.techniques[t.technique].billing
        if billing and billing.coding() not in codings:
            codings.append(billing.coding())
    for t in record.treatments:
        coding = _technique_coding(tables, t.technique)
        if coding not in codings:
            codings.append(coding)
    names = list(dict.fromkeys(tables.techniques[t.technique].display for t in record.treatments))
    text = "Medical massage: " + ", ".join(names) if names else "Medical massage"
    return {"coding": codings, "text": text} if codings else {"text": text}


def _narrative(
    record: SessionRecord, tables: MappingTables, billing: list[BillingLine]
) -> dict[str, str]:
    rows = []
    for t in record.treatments:
        site = _site_concept(tables, t.body_site, t.laterality)
        rows.append(
            f"<tr><td>{escape(tables.techniques[t.technique].display)}</td>"
            f"<td>{escape(site['text']) if site else ''}</td><td>{t.minutes}</td></tr>"
        )
    units = (
        "; ".join(f"CPT {b.code}: {b.units} unit(s) for {b.minutes} min" for b in billing)
        or "no timed codes"
    )
    notes = ""
    if record.notes:
        for label, text in (
            ("Subjective", record.notes.subjective),
            ("Objective", record.notes.objective),
            ("Assessment", record.notes.assessment),
            ("Plan", record.notes.plan),
        ):
            if text:
                notes += f"<p><b>{label}:</b> {escape(text)}</p>"
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p>Medical massage session {escape(record.session_id)}, "
        f"{escape(record.started_at.isoformat())} to {escape(record.ended_at.isoformat())}.</p>"
        "<table><tr><th>Technique</th><th>Body site</th><th>Minutes</th></tr>"
        + "".join(rows)
        + f"</table><p>Billing (8-minute rule): {escape(units)}.</p>{notes}</div>"
    )
    return {"status": "generated", "div": div}


def _notes(record: SessionRecord) -> list[dict[str, str]]:
    if record.notes is None:
        return []
    parts = (
        ("S", record.notes.subjective),
        ("O", record.notes.objective),
        ("A", record.notes.assessment),
        ("P", record.notes.plan),
    )
    return [{"text": f"{label}: {text}"} for label, text in parts if text]


def _status(record: SessionRecord, done: str) -> str:
    return "entered-in-error" if record.status == "entered-in-error" else done


def goal_identifier_for(clinic: ClinicIdentity, mrn: str, goal_id: str) -> dict[str, str]:
    """Goals belong to the patient, not to one visit: identified by MRN and the clinic's goal id."""
    return {"system": clinic.goal_system, "value": f"{mrn}/{goal_id}"}


def goal_identifier(ctx: SessionContext, record: SessionRecord, goal: GoalRecord) -> dict[str, str]:
    """The business identifier of a goal of the record's patient."""
    return goal_identifier_for(ctx.clinic, record.patient.mrn, goal.goal_id)


def goal_id(ctx: SessionContext, record: SessionRecord, goal: GoalRecord) -> str:
    """The stable id of a patient goal."""
    return resource_id("Goal", goal_identifier(ctx, record, goal))


def procedure(record: SessionRecord, tables: MappingTables, ctx: SessionContext) -> dict[str, Any]:
    """The US Core Procedure of the session."""
    ident = identifier(ctx, record, "procedure")
    billing = billing_lines(record, tables)
    body: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": resource_id("Procedure", ident),
        "meta": {"profile": [f"{US_CORE}/us-core-procedure"]},
        "text": _narrative(record, tables, billing),
        "extension": [_treatment_extension(tables, t) for t in record.treatments]
        + [
            {
                "url": PERTAINS_TO_GOAL,
                "valueReference": {"reference": f"Goal/{goal_id(ctx, record, g)}"},
            }
            for g in record.goals
        ],
        "identifier": [ident],
    }
    if ctx.referral:
        body["basedOn"] = [{"reference": f"ServiceRequest/{ctx.referral.service_request_id}"}]
    body |= {
        "status": _status(record, "completed"),
        "code": _procedure_code(record, tables),
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "performedPeriod": {
            "start": record.started_at.isoformat(),
            "end": record.ended_at.isoformat(),
        },
        "performer": [{"actor": {"reference": f"Practitioner/{ctx.practitioner_id}"}}],
    }
    reasons = [{"coding": [{"system": ICD10CM, "code": code}]} for code in record.diagnoses] or [
        dict(c) for c in (ctx.referral.reason_code if ctx.referral else ())
    ]
    if reasons:
        body["reasonCode"] = reasons
    if ctx.referral and ctx.referral.reason_reference:
        body["reasonReference"] = [dict(r) for r in ctx.referral.reason_reference]
    sites = []
    for t in record.treatments:
        site = _site_concept(tables, t.body_site, t.laterality)
        if site and site not in sites:
            sites.append(site)
    if sites:
        body["bodySite"] = sites
    notes = _notes(record)
    if notes:
        body["note"] = notes
    return body


def _quantity(measure: Measure, value: Any) -> dict[str, Any]:
    return {
        "value": value,
        "unit": measure.unit.display,
        "system": measure.unit.system,
        "code": measure.unit.code,
    }


def _effective(record: SessionRecord, a: Assessment) -> datetime:
    return a.at or (record.started_at if a.phase == "pre" else record.ended_at)


def observations(
    record: SessionRecord, tables: MappingTables, ctx: SessionContext
) -> list[dict[str, Any]]:
    """One Observation per measurement; post values point at their pre value (derivedFrom)."""
    procedure_id = resource_id("Procedure", identifier(ctx, record, "procedure"))
    pre_ids = {
        (a.measure, a.body_site, a.laterality): resource_id(
            "Observation", identifier(ctx, record, assessment_role(a))
        )
        for a in record.assessments
        if a.phase == "pre"
    }
    out = []
    for a in record.assessments:
        measure = tables.measures[a.measure]
        ident = identifier(ctx, record, assessment_role(a))
        extensions = [{"url": extension_url(tables, "assessment-phase"), "valueCode": a.phase}]
        extensions += [
            {
                "url": PERTAINS_TO_GOAL,
                "valueReference": {"reference": f"Goal/{goal_id(ctx, record, g)}"},
            }
            for g in record.goals
            if _goal_tracks(g, a)
        ]
        code_codings = ([measure.loinc.coding()] if measure.loinc else []) + [
            {"system": tables.systems.measure, "code": measure.key, "display": measure.display}
        ]
        body: dict[str, Any] = {
            "resourceType": "Observation",
            "id": resource_id("Observation", ident),
            "meta": {"profile": [measure.profile]},
            "extension": extensions,
            "identifier": [ident],
        }
        if ctx.referral:
            body["basedOn"] = [{"reference": f"ServiceRequest/{ctx.referral.service_request_id}"}]
        body |= {
            "partOf": [{"reference": f"Procedure/{procedure_id}"}],
            "status": _status(record, "final"),
            "category": [{"coding": [c.coding()]} for c in measure.categories],
            "code": {"coding": code_codings, "text": measure.display},
            "subject": {"reference": f"Patient/{ctx.patient_id}"},
            "effectiveDateTime": _effective(record, a).isoformat(),
            "performer": [{"reference": f"Practitioner/{ctx.practitioner_id}"}],
            "valueQuantity": _quantity(measure, a.value),
        }
        site = _site_concept(tables, a.body_site, a.laterality)
        if site:
            body["bodySite"] = site
        pre = pre_ids.get((a.measure, a.body_site, a.laterality))
        if a.phase == "post" and pre:
            body["derivedFrom"] = [{"reference": f"Observation/{pre}"}]
        out.append(body)
    return out


def _goal_tracks(goal: GoalRecord, a: Assessment) -> bool:
    """A goal pertains to a measurement of its measure, on its side and site when it names them."""
    return (
        goal.measure == a.measure
        and goal.laterality in (None, a.laterality)
        and goal.body_site in (None, a.body_site)
    )


def goals(
    record: SessionRecord, tables: MappingTables, ctx: SessionContext
) -> list[dict[str, Any]]:
    """One US Core Goal per goal of the record."""
    out = []
    for g in record.goals:
        ident = goal_identifier(ctx, record, g)
        body: dict[str, Any] = {
            "resourceType": "Goal",
            "id": resource_id("Goal", ident),
            "meta": {"profile": [f"{US_CORE}/us-core-goal"]},
            "identifier": [ident],
            "lifecycleStatus": "active",
            "description": {"text": g.description},
            "subject": {"reference": f"Patient/{ctx.patient_id}"},
            # set when the goal was first recorded; later sessions keep it
            "startDate": ctx.goal_start_dates.get(g.goal_id, record.started_at.date().isoformat()),
        }
        target: dict[str, Any] = {}
        if g.measure:
            measure = tables.measures[g.measure]
            site = _site_concept(tables, g.body_site, g.laterality)
            target["measure"] = {
                **({"extension": site["extension"]} if site and "extension" in site else {}),
                "coding": ([measure.loinc.coding()] if measure.loinc else [])
                + [
                    {
                        "system": tables.systems.measure,
                        "code": measure.key,
                        "display": measure.display,
                    }
                ],
                "text": f"{measure.display} ({site['text'].lower()})" if site else measure.display,
            }
            if g.target is not None:
                target["detailQuantity"] = _quantity(measure, g.target)
        if g.due:
            target["dueDate"] = g.due.isoformat()
        if target:
            body["target"] = [target]
        body["expressedBy"] = {"reference": f"Practitioner/{ctx.practitioner_id}"}
        out.append(body)
    return out
