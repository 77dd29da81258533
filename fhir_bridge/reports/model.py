"""What a progress report or discharge summary says, computed once for the HTML and the PDF.

Pure: an :class:`Episode` (the referral's resources as stored) and the mapping tables in, a
frozen :class:`Report` out. The numbers come from the outcome engine
(:func:`fhir_bridge.mapping.outcomes.outcome_series`); nothing here reads a clock (the caller
passes ``generated_at``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_bridge.mapping.billing import units_by_code
from fhir_bridge.mapping.outcomes import MeasureSeries, outcome_series
from fhir_bridge.mapping.prescription import prescription
from fhir_bridge.mapping.tables import MappingTables

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
NPI = "http://hl7.org/fhir/sid/us-npi"
TREATMENT_SUFFIX = "/StructureDefinition/massage-treatment"
KINDS = {"progress": "Progress report", "discharge": "Discharge summary"}


@dataclass(frozen=True)
class Episode:
    """A referral and what was done and measured under it (FHIR JSON as stored)."""

    service_request: dict[str, Any]
    patient: dict[str, Any]
    practitioners: dict[str, dict[str, Any]] = field(default_factory=dict)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    procedures: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Visit:
    date: str
    techniques: str
    minutes: int | None  # None: the visit record does not say
    units: str  # "97124 x 3", "" when unknown


@dataclass(frozen=True)
class GoalLine:
    description: str
    target: str
    latest: str
    status: str
    due: str


@dataclass(frozen=True)
class Report:
    """Everything the templates print, in reading order."""

    kind: str  # "progress" or "discharge"
    title: str
    clinic: str
    generated_at: str
    patient_name: str
    patient_birth_date: str
    patient_mrn: str
    physician: str
    physician_npi: str
    diagnoses: tuple[tuple[str, str], ...]  # (ICD-10-CM code, text)
    service: str
    authored_on: str
    visits_prescribed: int | None
    visits_used: int
    frequency: str
    expires: str
    visits: tuple[Visit, ...]
    series: tuple[MeasureSeries, ...]
    goals: tuple[GoalLine, ...]
    assessment: str
    plan: str
    therapist: str

    @property
    def visits_summary(self) -> str:
        of = f" of {self.visits_prescribed}" if self.visits_prescribed is not None else ""
        return f"{self.visits_used}{of}"


def name_of(resource: dict[str, Any] | None) -> str:
    """A person's name as written: HumanName.text, else given + family (+ suffix)."""
    for n in (resource or {}).get("name", []) or []:
        if n.get("text"):
            return str(n["text"])
        given = " ".join(n.get("given", []))
        suffix = ", ".join(n.get("suffix", []))
        full = f"{given} {n.get('family', '')}".strip()
        return f"{full}, {suffix}" if suffix else full
    return ""


def _identifier(resource: dict[str, Any] | None, system_suffix: str) -> str:
    for ident in (resource or {}).get("identifier", []) or []:
        if str(ident.get("system", "")).endswith(system_suffix):
            return str(ident.get("value", ""))
    return ""


def _when(procedure: dict[str, Any]) -> str:
    period = procedure.get("performedPeriod") or {}
    return str(procedure.get("performedDateTime") or period.get("start") or "")


def _diagnoses(sr: dict[str, Any], conditions: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for concept in [*(sr.get("reasonCode") or []), *(c.get("code", {}) for c in conditions)]:
        for coding in concept.get("coding", []) or []:
            if coding.get("system") == ICD10CM and coding.get("code"):
                text = coding.get("display") or concept.get("text") or ""
                out.setdefault(str(coding["code"]), str(text))
    return tuple(out.items())


def _treatments(procedure: dict[str, Any]) -> list[dict[str, Any]]:
    """The massage-treatment extensions as {technique, code, system, minutes}."""
    out = []
    for ext in procedure.get("extension", []) or []:
        if not str(ext.get("url", "")).endswith(TREATMENT_SUFFIX):
            continue
        parts = {p.get("url"): p for p in ext.get("extension", []) or []}
        technique = (parts.get("technique") or {}).get("valueCoding", {})
        billing = (parts.get("billingCode") or {}).get("valueCoding", {})
        minutes = (parts.get("minutes") or {}).get("valueQuantity", {}).get("value")
        out.append(
            {
                "key": technique.get("code", ""),
                "technique": technique.get("display") or technique.get("code", ""),
                "system": billing.get("system", ""),
                "code": billing.get("code", ""),
                "minutes": int(minutes) if isinstance(minutes, int | float | Decimal) else 0,
            }
        )
    return out


def _visit(procedure: dict[str, Any], tables: MappingTables) -> Visit:
    treatments = _treatments(procedure)
    if not treatments:  # a visit recorded elsewhere: what it says, nothing guessed
        return Visit(
            _when(procedure)[:10], str(procedure.get("code", {}).get("text", "")), None, ""
        )
    names = list(dict.fromkeys(t["technique"] for t in treatments))
    timed = [
        (t["system"], t["code"], t["minutes"])
        for t in treatments
        if t["code"]
        and (tables.techniques.get(t["key"]) is None or tables.techniques[t["key"]].timed)
    ]
    units = ", ".join(f"{line.code} x {line.units}" for line in units_by_code(timed))
    minutes = sum(t["minutes"] for t in treatments)
    return Visit(_when(procedure)[:10], ", ".join(names), minutes, units)


def _soap(procedures: list[dict[str, Any]], prefix: str) -> str:
    """The latest visit's note starting with ``prefix`` ("A: ", "P: ")."""
    for procedure in sorted(procedures, key=_when, reverse=True):
        for note in procedure.get("note", []) or []:
            text = str(note.get("text", ""))
            if text.startswith(prefix):
                return text[len(prefix) :].strip()
    return ""


def _goal_lines(episode: Episode, series: tuple[MeasureSeries, ...]) -> tuple[GoalLine, ...]:
    lines = []
    assessed = set()
    for s in series:
        for g in s.goals:
            assessed.add(g.goal_id)
            lines.append(
                GoalLine(g.description, s.show(g.target), s.show(g.latest), g.status, g.due)
            )
    for goal in episode.goals:
        if goal.get("id") not in assessed:
            due = next((str(t.get("dueDate", "")) for t in goal.get("target", []) or []), "")
            text = str(goal.get("description", {}).get("text", ""))
            lines.append(GoalLine(text, "", "", str(goal.get("lifecycleStatus", "")), due))
    return tuple(lines)


def build_report(
    episode: Episode,
    tables: MappingTables,
    *,
    kind: str,
    clinic: str,
    generated_at: str,
) -> Report:
    """The report's content; ``kind`` is "progress" or "discharge"."""
    sr = episode.service_request
    procedures = sorted(episode.procedures, key=_when)
    series = outcome_series(episode.observations, tables.measures, tables.mcids, episode.goals)
    order = prescription(sr)
    requester_ref = str(sr.get("requester", {}).get("reference", ""))
    requester = episode.practitioners.get(requester_ref.removeprefix("Practitioner/"))
    therapist = ""
    for procedure in reversed(procedures):
        for performer in procedure.get("performer", []) or []:
            actor = performer.get("actor", {})
            who = episode.practitioners.get(
                str(actor.get("reference", "")).removeprefix("Practitioner/")
            )
            therapist = therapist or str(actor.get("display") or name_of(who))
    return Report(
        kind=kind,
        title=KINDS[kind],
        clinic=clinic,
        generated_at=generated_at,
        patient_name=name_of(episode.patient) or str(sr.get("subject", {}).get("display", "")),
        patient_birth_date=str(episode.patient.get("birthDate", "")),
        patient_mrn=_identifier(episode.patient, "/mrn"),
        physician=str(sr.get("requester", {}).get("display") or name_of(requester)),
        physician_npi=_identifier(requester, "us-npi"),
        diagnoses=_diagnoses(sr, episode.conditions),
        service=str(sr.get("code", {}).get("text", "")),
        authored_on=str(sr.get("authoredOn", ""))[:10],
        visits_prescribed=order.visits,
        visits_used=sum(1 for p in procedures if p.get("status") == "completed"),
        frequency=order.frequency or "",
        expires=order.expires.isoformat() if order.expires else "",
        visits=tuple(_visit(p, tables) for p in procedures),
        series=series,
        goals=_goal_lines(episode, series),
        assessment=_soap(procedures, "A: "),
        plan=_soap(procedures, "P: "),
        therapist=therapist,
    )
