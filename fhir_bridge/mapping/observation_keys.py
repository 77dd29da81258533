"""How the outcome engine reads a stored Observation or Goal: its phase, its body site and side,
and which measure of ``mappings/measures.yaml`` it is.

Pure and tolerant: Observations loaded from elsewhere may lack the phase extension, a coded
body site or the clinic's measure code; each helper then says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fhir_bridge.mapping.tables import LOINC, Measure

PHASE_SUFFIX = "/StructureDefinition/assessment-phase"
LATERALITY_SUFFIX = "/StructureDefinition/body-site-laterality"
MEASURE_SYSTEM_SUFFIX = "/CodeSystem/massage-measure"
BODY_SITE_SYSTEM_SUFFIX = "/CodeSystem/massage-body-site"
LATERALITY_SYSTEM_SUFFIX = "/CodeSystem/massage-laterality"

PRE, POST, UNRECORDED = "pre", "post", "unrecorded"


def phase_of(obs: Mapping[str, Any]) -> str:
    """PRE, POST, or UNRECORDED when the assessment-phase extension is absent or unknown."""
    for ext in obs.get("extension", []) or []:
        if str(ext.get("url", "")).endswith(PHASE_SUFFIX):
            code = ext.get("valueCode")
            return code if code in (PRE, POST) else UNRECORDED
    return UNRECORDED


def laterality(concept: Mapping[str, Any]) -> str:
    for ext in concept.get("extension", []) or []:
        if str(ext.get("url", "")).endswith(LATERALITY_SUFFIX):
            for coding in ext.get("valueCodeableConcept", {}).get("coding", []):
                if str(coding.get("system", "")).endswith(LATERALITY_SYSTEM_SUFFIX):
                    return str(coding.get("code", ""))
            return str(ext.get("valueCodeableConcept", {}).get("text", "")).lower()
    return ""


def site_of(concept: Mapping[str, Any] | None) -> tuple[str, str]:
    """(body site, laterality) of a bodySite or Goal measure: codes when known, else text."""
    if not concept:
        return "", ""
    site = ""
    for coding in concept.get("coding", []) or []:
        if str(coding.get("system", "")).endswith(BODY_SITE_SYSTEM_SUFFIX):
            site = str(coding.get("code", ""))
    if not site and concept.get("coding"):
        first = concept["coding"][0]
        site = f"{first.get('system')}|{first.get('code')}"
    if not site and not laterality(concept):
        # text only (e.g. loaded data): "Lower back" is the clinic's lower_back
        site = "_".join(str(concept.get("text", "")).lower().split())
    return site, laterality(concept)


class MeasureFinder:
    """Finds the measure of an Observation code: the clinic code, else a mapped LOINC code."""

    def __init__(self, measures: Mapping[str, Measure]) -> None:
        self.measures = measures
        self.by_loinc = {
            m.loinc.code: m for m in measures.values() if m.loinc and m.loinc.system == LOINC
        }

    def find(self, code: Mapping[str, Any]) -> tuple[str, Measure | None]:
        codings = code.get("coding", []) or []
        for c in codings:
            if (
                str(c.get("system", "")).endswith(MEASURE_SYSTEM_SUFFIX)
                and c.get("code") in self.measures
            ):
                return c["code"], self.measures[c["code"]]
        for c in codings:
            if c.get("system") == LOINC and c.get("code") in self.by_loinc:
                measure = self.by_loinc[c["code"]]
                return measure.key, measure
        for c in codings:
            if c.get("system") == LOINC:
                return f"loinc:{c.get('code')}", None
        first = codings[0] if codings else {}
        key = f"{first.get('system')}|{first.get('code')}" if first else str(code.get("text", ""))
        return key, None


def usable(obs: Mapping[str, Any]) -> bool:
    quantity = obs.get("valueQuantity") or {}
    value = quantity.get("value")
    return (
        obs.get("status") not in ("entered-in-error", "cancelled", "registered")
        and isinstance(value, int | float | Decimal)
        and not isinstance(value, bool)
        and bool(obs.get("effectiveDateTime"))
    )


def visit_of(obs: Mapping[str, Any]) -> str:
    for part in obs.get("partOf", []) or []:
        ref = str(part.get("reference", ""))
        if ref.startswith("Procedure/"):
            return ref
    return ""
