"""Adapter between the console's outcome charts and the outcome engine.

ONE function boundary: ``measure_series(observations, goals)`` turns a patient's visit
Observations and Goals (FHIR dicts) into one ``MeasureSeries`` per measure and body site,
with its pre and post values per visit and the goal's target. Until the outcome engine
(``mapping/outcomes.py``, being written on another branch) lands, the grouping below is a
small stand-in that follows ``mapping/outcome_summary.py``'s rules (phase extension, code and
body site as the key, only numeric ``valueQuantity``). At merge, make this function call the
engine and map its result onto ``MeasureSeries``; the templates and chart code need no change.

Pure: no flask, no database.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

PHASE_EXTENSION_SUFFIX = "/StructureDefinition/assessment-phase"
MEASURE_SYSTEM_SUFFIX = "/CodeSystem/massage-measure"


@dataclass(frozen=True)
class Point:
    """One value of a measure: when (ISO date-time), pre or post treatment, the number."""

    at: str
    phase: str
    value: float


@dataclass(frozen=True)
class MeasureSeries:
    """A measure (and body site) over visits, with the goal target when one is set."""

    label: str
    unit: str
    points: list[Point] = field(default_factory=list)
    goal: float | None = None
    goal_text: str | None = None


def _is_number(value: Any) -> bool:
    """int, float or Decimal (the store reads decimals exactly), never a bool."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _phase(obs: dict[str, Any]) -> str | None:
    for ext in obs.get("extension", []):
        if str(ext.get("url", "")).endswith(PHASE_EXTENSION_SUFFIX):
            return ext.get("valueCode")
    return None


def _measure_code(concept: dict[str, Any]) -> str | None:
    for coding in concept.get("coding", []):
        if str(coding.get("system", "")).endswith(MEASURE_SYSTEM_SUFFIX):
            return coding.get("code")
    return None


def _label(obs: dict[str, Any]) -> str:
    text = obs.get("code", {}).get("text") or "Measure"
    site = obs.get("bodySite", {}).get("text")
    return f"{text} ({site})" if site else text


def _goals_by_measure(goals: list[dict[str, Any]]) -> dict[str, tuple[float, str | None]]:
    out: dict[str, tuple[float, str | None]] = {}
    for goal in goals:
        if goal.get("lifecycleStatus") in ("cancelled", "entered-in-error", "rejected"):
            continue
        for target in goal.get("target", []):
            code = _measure_code(target.get("measure", {}))
            value = target.get("detailQuantity", {}).get("value")
            if code and _is_number(value):
                out[code] = (float(value), goal.get("description", {}).get("text"))
    return out


def _point(obs: dict[str, Any]) -> Point:
    return Point(obs["effectiveDateTime"], str(_phase(obs)), float(obs["valueQuantity"]["value"]))


def measure_series(
    observations: list[dict[str, Any]], goals: list[dict[str, Any]]
) -> list[MeasureSeries]:
    """One series per measure and body site, points in time order, sorted by label."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for obs in observations:
        value = obs.get("valueQuantity", {}).get("value")
        if (
            obs.get("status") in ("final", "amended", "corrected")
            and _phase(obs) in ("pre", "post")
            and _is_number(value)
            and obs.get("effectiveDateTime")
        ):
            code = _measure_code(obs.get("code", {})) or _label(obs)
            groups[(code, obs.get("bodySite", {}).get("text", ""))].append(obs)
    targets = _goals_by_measure(goals)
    series = []
    for (code, _site), items in groups.items():
        items.sort(key=lambda o: (o["effectiveDateTime"], o.get("id", "")))
        goal = targets.get(code)
        series.append(
            MeasureSeries(
                label=_label(items[-1]),
                unit=str(items[-1]["valueQuantity"].get("unit", "")),
                points=[_point(o) for o in items],
                goal=goal[0] if goal else None,
                goal_text=goal[1] if goal else None,
            )
        )
    return sorted(series, key=lambda s: s.label)
