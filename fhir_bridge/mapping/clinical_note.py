"""A readable clinical note (HTML) and its US Core DocumentReference, from structured data.

Pure: the patient's referral, visits (Procedures with their narrative of modalities, minutes and
billed units), measurements before and after each visit, and goals in; one HTML document and
the DocumentReference that carries it out. What a note type holds:

- 11506-3 progress note, 28570-0 procedure note: referral, visit log with measurements, goals;
- 18776-5 plan of care note: referral, goals, and the visit log as progress to date;
- 47420-5 functional status assessment note: referral, measurements per visit, goals.
"""

from __future__ import annotations

import base64
import html
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from fhir_bridge.mapping.cdex import DOCUMENT_TYPES, LOINC
from fhir_bridge.mapping.outcome_summary import outcome_changes, shipped_tables
from fhir_bridge.mapping.outcomes import POST, PRE, UNRECORDED, outcome_series
from fhir_bridge.mapping.tables import MappingTables

US_CORE_DOCREF = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"
DOCREF_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
_DIV = re.compile(r"^<div[^>]*>(.*)</div>$", re.DOTALL)


@dataclass
class ChartExtract:
    """The structured data a note is written from (all of one patient)."""

    patient: dict[str, Any]
    service_requests: list[dict[str, Any]] = field(default_factory=list)
    procedures: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)


def _e(value: Any) -> str:
    return html.escape(str(value)) if value is not None else ""


def _name(patient: dict[str, Any]) -> str:
    for n in patient.get("name", []):
        given = " ".join(n.get("given", []))
        return n.get("text") or f"{given} {n.get('family', '')}".strip()
    return f"Patient {patient.get('id', '')}"


def _concept(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return concept["text"]
    codings = concept.get("coding", [])
    return ", ".join(c.get("display") or c.get("code", "") for c in codings)


def _when(procedure: dict[str, Any]) -> str:
    period = procedure.get("performedPeriod") or {}
    return procedure.get("performedDateTime") or period.get("start") or ""


def _referrals(extract: ChartExtract, _tables: MappingTables) -> str:
    if not extract.service_requests:
        return "<h2>Referral</h2><p>No referral on file.</p>"
    rows = []
    for sr in extract.service_requests:
        reasons = "; ".join(_concept(r) for r in sr.get("reasonCode", []))
        requester = sr.get("requester", {}).get("display") or sr.get("requester", {}).get(
            "reference", ""
        )
        rows.append(
            f"<tr><td>{_e(sr.get('authoredOn', ''))}</td><td>{_e(_concept(sr.get('code')))}</td>"
            f"<td>{_e(reasons)}</td><td>{_e(requester)}</td><td>{_e(sr.get('status'))}</td></tr>"
        )
    return (
        "<h2>Referral</h2><table><tr><th>Signed</th><th>Service</th><th>Diagnoses</th>"
        "<th>Requester</th><th>Status</th></tr>" + "".join(rows) + "</table>"
    )


def _visits(extract: ChartExtract, tables: MappingTables) -> str:
    by_procedure: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for obs in extract.observations:
        for part in obs.get("partOf", []):
            by_procedure[part.get("reference", "")].append(obs)
    parts = ["<h2>Visit log</h2>"]
    if not extract.procedures:
        parts.append("<p>No visits documented.</p>")
    for proc in sorted(extract.procedures, key=_when):
        parts.append(f"<h3>Visit {_e(_when(proc)[:10])}</h3>")
        match = _DIV.match(proc.get("text", {}).get("div", "").strip())
        if match:
            parts.append(match.group(1))  # the visit's own narrative: modalities, minutes, units
        measured = by_procedure.get(f"Procedure/{proc.get('id')}", [])
        if measured:
            parts.append(_measurement_table(measured, tables))
    return "".join(parts)


def _measurement_table(observations: list[dict[str, Any]], tables: MappingTables) -> str:
    """Before / After columns by the recorded phase; a third column only for values whose
    phase was not recorded (never guessed into Before or After)."""
    series = outcome_series(observations, tables.measures, tables.mcids)
    rows = []
    unrecorded = any(p.phase == UNRECORDED for s in series for p in s.points)
    for s in series:
        cells = {PRE: [], POST: [], UNRECORDED: []}
        for p in s.points:
            cells[p.phase].append(s.show(p.value))
        extra = f"<td>{_e(', '.join(cells[UNRECORDED]))}</td>" if unrecorded else ""
        rows.append(
            f"<tr><td>{_e(s.label)}</td><td>{_e(s.site)}</td><td>{_e(', '.join(cells[PRE]))}</td>"
            f"<td>{_e(', '.join(cells[POST]))}</td>{extra}</tr>"
        )
    head = "<th>Phase not recorded</th>" if unrecorded else ""
    return (
        "<table><tr><th>Measure</th><th>Site</th><th>Before</th><th>After</th>"
        + head
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _outcomes(extract: ChartExtract, tables: MappingTables) -> str:
    lines = [o["note"][0]["text"] for o in outcome_changes(extract.observations, tables)]
    if not lines:
        return ""
    return (
        "<h2>Change over the course</h2><ul>"
        + "".join(f"<li>{_e(x)}</li>" for x in lines)
        + "</ul>"
    )


def _goals(extract: ChartExtract, _tables: MappingTables) -> str:
    if not extract.goals:
        return "<h2>Goals</h2><p>No goals recorded.</p>"
    items = []
    for g in extract.goals:
        targets = [t.get("detailQuantity") for t in g.get("target", []) if t.get("detailQuantity")]
        aim = "; ".join(f"target {t.get('value')} {t.get('unit', '')}" for t in targets)
        items.append(
            f"<li>{_e(_concept(g.get('description')))} ({_e(g.get('lifecycleStatus'))})"
            f"{' - ' + _e(aim) if aim else ''}</li>"
        )
    return "<h2>Goals</h2><ul>" + "".join(items) + "</ul>"


def note_html(
    code: str,
    extract: ChartExtract,
    *,
    clinic_name: str,
    written_at: str,
    tables: MappingTables | None = None,
) -> str:
    """The note as a complete HTML document (``code`` is one of DOCUMENT_TYPES).

    ``tables``: the app's mapping tables (measures, MCIDs); the shipped ones when not given.
    """
    tables = tables or shipped_tables()
    title = DOCUMENT_TYPES[code]
    sections = {
        "11506-3": [_referrals, _visits, _outcomes, _goals],
        "28570-0": [_referrals, _visits],
        "18776-5": [_referrals, _goals, _outcomes, _visits],
        "47420-5": [_referrals, _outcomes, _visits, _goals],
    }[code]
    head = (
        f"<h1>{_e(title)}: medical massage</h1><p>Patient: {_e(_name(extract.patient))}, born "
        f"{_e(extract.patient.get('birthDate', 'unknown'))}. Written {_e(written_at)} by "
        f"{_e(clinic_name)} from the clinic's structured records.</p>"
    )
    body = head + "".join(section(extract, tables) for section in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title></head><body>{body}</body></html>"
    )


def document_reference(
    code: str,
    html_text: str,
    *,
    patient_reference: str,
    author_reference: str | None,
    written_at: str,
) -> dict[str, Any]:
    """A US Core DocumentReference whose content is the note (text/html, base64)."""
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [US_CORE_DOCREF]},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": code, "display": DOCUMENT_TYPES[code]}]},
        "category": [
            {
                "coding": [
                    {"system": DOCREF_CATEGORY, "code": "clinical-note", "display": "Clinical Note"}
                ]
            }
        ],
        "subject": {"reference": patient_reference},
        "date": written_at,
        "description": f"{DOCUMENT_TYPES[code]}, medical massage, generated from structured data",
        "content": [
            {
                "attachment": {
                    "contentType": "text/html",
                    "language": "en",
                    "data": base64.b64encode(html_text.encode("utf-8")).decode(),
                    "title": DOCUMENT_TYPES[code],
                    "creation": written_at,
                }
            }
        ],
    }
    if author_reference:
        doc["author"] = [{"reference": author_reference}]
    return doc
