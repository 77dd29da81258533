"""How the patient changed: one summary Observation per measure and body site, from the engine.

Pure: visit Observations in, summary Observations out (``$documentation`` and CDex notes). The
numbers come from :mod:`fhir_bridge.mapping.outcomes`: baseline and latest of the course
(pre-treatment values and values whose phase was not recorded, by time), the change, its
direction and the MCID verdict. Each summary carries the change as its value (same UCUM unit),
baseline and latest as components, the two source Observations in ``derivedFrom``, and a line a
reviewer reads as is, in human units ("8/10", "40 degrees"). Its code is text only: there is no
standard code for "change in X", and we never invent one.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from functools import cache
from typing import Any

from fhir_bridge.mapping.outcomes import UNJUDGED, UNRECORDED, MeasureSeries, fmt, outcome_series
from fhir_bridge.mapping.tables import MappingTables, load_tables


@cache
def shipped_tables() -> MappingTables:
    """The tables shipped in ``mappings/``, for callers that were not handed the app's tables."""
    return load_tables()


def summary_line(series: MeasureSeries) -> str:
    """E.g. "Pain (Neck): 8 -> 6 /10 (change -2 points, improved; MCID 2 points passed) ..."."""
    base, latest = series.baseline, series.latest
    if base is None or latest is None:
        raise ValueError("a summary needs a course value")
    n = len(series.course)
    unrecorded = series.phase_unrecorded
    if unrecorded == 0:
        counted = f"{n} pre-treatment measurement(s)"
    elif unrecorded == n:
        counted = f"{n} measurement(s), phase not recorded"
    else:
        counted = (
            f"{n} measurement(s) ({n - unrecorded} pre-treatment, {unrecorded} phase not recorded)"
        )
    verdict = series.direction if series.direction != UNJUDGED else "direction not known"
    if len(series.course) > 1:
        verdict += f"; {series.mcid_status}"
    return (
        f"{series.title}: {fmt(base.value)} -> {fmt(latest.value)} {series.unit}"
        f" (change {series.show_change(series.change) or '0'}, {verdict})"
        f" over {counted}, {base.date} to {latest.date}"
    )


def _summary(
    n: int, series: MeasureSeries, by_id: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    line = summary_line(series)  # raises unless the series has a course
    base, latest = series.course[0], series.course[-1]
    first, last = by_id[base.observation_id], by_id[latest.observation_id]
    q0, q1 = first["valueQuantity"], last["valueQuantity"]
    unit = {k: q1[k] for k in ("unit", "system", "code") if k in q1}
    d0, d1 = base.date, latest.date
    phase0 = "" if base.phase == UNRECORDED else "pre-treatment "
    phase1 = "" if latest.phase == UNRECORDED else "pre-treatment "
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"outcome-change-{n}",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(line)}</p></div>',
        },
        "status": "final",
        "code": {"text": f"Change in {series.title}, baseline to latest value"},
        "effectivePeriod": {"start": first["effectiveDateTime"], "end": last["effectiveDateTime"]},
        "valueQuantity": {"value": series.change, **unit},
        "derivedFrom": [
            {"reference": f"Observation/{first['id']}"},
            {"reference": f"Observation/{last['id']}"},
        ],
        "component": [
            {
                "code": {**last["code"], "text": f"Baseline {phase0}value ({d0})"},
                "valueQuantity": q0,
            },
            {
                "code": {**last["code"], "text": f"Latest {phase1}value ({d1})"},
                "valueQuantity": q1,
            },
        ],
        "note": [{"text": line}],
    }
    for key in ("category", "bodySite", "subject"):
        if key in last:
            body[key] = last[key]
    return body


def outcome_changes(
    observations: list[dict[str, Any]], tables: MappingTables | None = None
) -> list[dict[str, Any]]:
    """One summary Observation per measure (and body site) with a course value."""
    tables = tables or shipped_tables()
    by_id = {str(o.get("id", "")): o for o in observations}
    series = [s for s in outcome_series(observations, tables.measures, tables.mcids) if s.course]
    return [_summary(n, s, by_id) for n, s in enumerate(series, start=1)]
