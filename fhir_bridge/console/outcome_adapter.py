"""Adapter between the console's outcome charts and the outcome engine.

``measure_series(observations, goals, tables)`` runs the same engine the progress report uses
(``mapping/outcomes.py``: grouping by measure and body site, phases, human units, goals) and
keeps what the console's inline chart draws: each value with its phase (``pre``, ``post``, or
``unrecorded`` when the Observation carries no assessment phase: never put in a column it was
not measured in) and the first goal's target.

Pure: no flask, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_bridge.mapping.outcomes import PHASE_LABELS, outcome_series
from fhir_bridge.mapping.tables import MappingTables


@dataclass(frozen=True)
class Point:
    """One value of a measure: when (ISO date-time), pre, post or unrecorded, the number."""

    at: str
    phase: str
    value: float

    @property
    def phase_label(self) -> str:
        """ "before treatment", "after treatment" or "phase not recorded"."""
        return PHASE_LABELS[self.phase]


@dataclass(frozen=True)
class MeasureSeries:
    """A measure (and body site) over visits, with the goal target when one is set."""

    label: str
    unit: str
    points: list[Point] = field(default_factory=list)
    goal: float | None = None
    goal_text: str | None = None


def measure_series(
    observations: list[Mapping[str, Any]],
    goals: list[Mapping[str, Any]],
    tables: MappingTables,
) -> list[MeasureSeries]:
    """One series per measure and body site, points in time order, sorted by label."""
    out = []
    for series in outcome_series(observations, tables.measures, tables.mcids, goals):
        goal = series.goals[0] if series.goals else None
        out.append(
            MeasureSeries(
                label=series.title,
                unit=series.unit,
                points=[Point(p.at, p.phase, p.value) for p in series.points],
                goal=goal.target if goal else None,
                goal_text=goal.description if goal else None,
            )
        )
    return sorted(out, key=lambda s: s.label)
