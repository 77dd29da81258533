"""The outcome engine: how a patient changed over a referral episode, per measure and body site.

Pure: the episode's visit Observations (FHIR JSON as stored), the measure and MCID tables and the
patient's Goals in; frozen :class:`MeasureSeries` out, one per measure and body site, ordered by
measure then site. No clock, no I/O.

Rules (what a physician or a payer reviewer reads from it):

- The **course** of a measure is its pre-treatment values, visit by visit, plus values whose
  phase was not recorded (Observations loaded from elsewhere carry no assessment-phase
  extension). They are ordered by time; an unrecorded phase is labelled as such, never guessed.
  Post-treatment values are the **immediate effect** of a visit (pre -> post), not the course.
- **Baseline** is the first value of the course, **latest** the last; change = latest - baseline,
  percent change relative to the baseline (none when the baseline is 0).
- **Direction** comes from ``higher_is_better`` of the measure (lower is better for pain and
  disability, higher for range of motion and function); a measure the tables do not know is
  reported without a direction.
- **MCID**: the improvement passes when it is at least the measure's published MCID
  (``mappings/mcid.yaml``); without a verified value the series says so.
- **Goals**: a Goal whose target names the measure (and laterality) is met when the latest value
  reaches the target in the better direction.
- Display units are for people: ``/10`` for 0-10 scores, ``degrees``, ``points``; UCUM
  annotations such as ``{score}`` are never shown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_bridge.fhir.dates import parse_fhir_datetime_range
from fhir_bridge.mapping.mcid import Mcid
from fhir_bridge.mapping.observation_keys import (
    POST,
    PRE,
    UNRECORDED,
    MeasureFinder,
    laterality,
    phase_of,
    site_of,
    usable,
    visit_of,
)
from fhir_bridge.mapping.tables import Measure

PHASE_LABELS = {PRE: "before treatment", POST: "after treatment", UNRECORDED: "phase not recorded"}
IMPROVED, WORSENED, UNCHANGED, UNJUDGED = "improved", "worsened", "no change", "not judged"
SINGLE = "one measurement"


@dataclass(frozen=True)
class Point:
    """One measurement: when, what value, in which phase of which visit."""

    observation_id: str
    at: str  # effectiveDateTime as recorded (with its offset)
    value: float
    phase: str  # PRE, POST or UNRECORDED
    visit: str  # "Procedure/<id>" it was part of, or "" when none

    @property
    def date(self) -> str:
        return self.at[:10]

    @property
    def phase_label(self) -> str:
        return PHASE_LABELS[self.phase]


@dataclass(frozen=True)
class VisitEffect:
    """One visit's immediate effect: the value before and after treatment."""

    visit: str
    date: str
    pre: float | None
    post: float | None
    change: float | None  # post - pre, when both were recorded
    direction: str


@dataclass(frozen=True)
class GoalProgress:
    """A goal on this measure: its target against the latest value."""

    goal_id: str
    description: str
    target: float
    due: str
    latest: float | None
    met: bool | None  # None: no value yet, or the measure has no known direction

    @property
    def status(self) -> str:
        return {True: "met", False: "not met", None: "not assessed"}[self.met]


@dataclass(frozen=True)
class MeasureSeries:
    """Everything the episode says about one measure at one body site."""

    measure: str  # measure key of mappings/measures.yaml, or the code text when unknown
    label: str
    site: str  # body site and side as recorded ("Neck", "Left side"), "" when none
    unit: str  # for people: "/10", "degrees", "points"
    higher_is_better: bool | None
    points: tuple[Point, ...]  # every measurement, by time
    course: tuple[Point, ...]  # pre-treatment and phase-not-recorded values, by time
    visits: tuple[VisitEffect, ...]
    goals: tuple[GoalProgress, ...]
    mcid: Mcid | None
    scale: tuple[float, float] | None  # the measure's allowed range, for charts

    @property
    def title(self) -> str:
        return f"{self.label} ({self.site})" if self.site else self.label

    @property
    def baseline(self) -> Point | None:
        return self.course[0] if self.course else None

    @property
    def latest(self) -> Point | None:
        return self.course[-1] if self.course else None

    @property
    def change(self) -> float | None:
        if not self.course:
            return None
        return _round(self.course[-1].value - self.course[0].value)

    @property
    def percent_change(self) -> float | None:
        base = self.baseline
        if base is None or base.value == 0 or self.change is None or len(self.course) < 2:
            return None
        return round(self.change / abs(base.value) * 100, 1)

    @property
    def direction(self) -> str:
        if len(self.course) == 1:
            return SINGLE
        return _direction(self.change, self.higher_is_better)

    @property
    def phase_unrecorded(self) -> int:
        return sum(1 for p in self.course if p.phase == UNRECORDED)

    @property
    def mcid_passed(self) -> bool | None:
        """Improvement of at least the MCID; None without a verified MCID or a second value."""
        if self.mcid is None or self.mcid.value is None or len(self.course) < 2:
            return None
        if self.higher_is_better is None or self.change is None:
            return None
        gain = self.change if self.higher_is_better else -self.change
        return Decimal(str(gain)) >= self.mcid.value

    @property
    def mcid_status(self) -> str:
        if self.mcid is None or self.mcid.value is None:
            return "no published MCID"
        if self.mcid_passed is None:
            return "not assessed yet"
        word = "passed" if self.mcid_passed else "not reached"
        return f"MCID {fmt(float(self.mcid.value))} {self.unit_word} {word}"

    @property
    def unit_word(self) -> str:
        """The unit for a change: "points" for scores (a change of 2 is not "2/10")."""
        return "points" if self.unit == "/10" else self.unit

    def show(self, value: float | None) -> str:
        return show(value, self.unit)

    def show_change(self, value: float | None) -> str:
        if value is None:
            return ""
        sign = "+" if value > 0 else ""
        unit = "point" if self.unit_word == "points" and abs(value) == 1 else self.unit_word
        return f"{sign}{fmt(value)} {unit}"


# --- formatting ---------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """A number as people write it: 6, 42.5, -2 (no trailing .0)."""
    if value is None:
        return ""
    return f"{_round(value):g}"


def show(value: float | None, unit: str) -> str:
    """A value with its human unit: "8/10", "40 degrees", "41.3 points"."""
    if value is None:
        return ""
    return f"{fmt(value)}{unit}" if unit.startswith("/") else f"{fmt(value)} {unit}".strip()


def human_unit(ucum: str, unit_text: str, measure: Measure | None) -> str:
    """What a clinician reads instead of the UCUM code."""
    if ucum == "deg":
        return "degrees"
    if ucum == "%":
        return "%"
    if ucum.startswith("{") or not ucum:
        if measure is not None and measure.minimum == 0 and measure.maximum == 10:
            return "/10"
        return "points"
    text = unit_text or ucum
    return "points" if text.startswith("{") else text


def _round(value: float) -> float:
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


def _direction(change: float | None, higher_is_better: bool | None) -> str:
    if change is None or higher_is_better is None:
        return UNJUDGED
    if change == 0:
        return UNCHANGED
    # change == 0 returned above, so > and >= agree here
    return IMPROVED if (change > 0) == higher_is_better else WORSENED  # pragma: no mutate


# --- the engine ---------------------------------------------------------------------------


def outcome_series(
    observations: Iterable[Mapping[str, Any]],
    measures: Mapping[str, Measure],
    mcids: Mapping[str, Mcid] | None = None,
    goals: Iterable[Mapping[str, Any]] = (),
) -> tuple[MeasureSeries, ...]:
    """One series per measure and body site with at least one numeric measurement."""
    finder = MeasureFinder(measures)
    groups: dict[tuple[str, tuple[str, str]], list[tuple[Mapping[str, Any], Point]]] = defaultdict(
        list
    )
    for obs in observations:
        if not usable(obs):
            continue
        key, _ = finder.find(obs.get("code", {}))
        point = Point(
            observation_id=str(obs.get("id", "")),
            at=str(obs["effectiveDateTime"]),
            value=_round(float(obs["valueQuantity"]["value"])),
            phase=phase_of(obs),
            visit=visit_of(obs),
        )
        groups[(key, site_of(obs.get("bodySite")))].append((obs, point))
    goal_list = list(goals)
    out = []
    for (key, site_key), members in sorted(groups.items()):
        members.sort(key=lambda m: (_instant(m[1].at), m[1].observation_id))
        out.append(_series(key, site_key, members, finder, mcids or {}, goal_list))
    return tuple(out)


def _instant(at: str) -> str:
    """Sort key in UTC where an offset is given (10:00-05:00 is after 14:00Z)."""
    try:
        return parse_fhir_datetime_range(at)[0].isoformat()
    except ValueError:
        return at


def _series(
    key: str,
    site_key: tuple[str, str],
    members: list[tuple[Mapping[str, Any], Point]],
    finder: MeasureFinder,
    mcids: Mapping[str, Mcid],
    goals: list[Mapping[str, Any]],
) -> MeasureSeries:
    last_obs = members[-1][0]
    _, measure = finder.find(last_obs.get("code", {}))
    quantity = last_obs["valueQuantity"]
    unit = human_unit(str(quantity.get("code", "")), str(quantity.get("unit", "")), measure)
    higher = measure.higher_is_better if measure else None
    points = tuple(p for _, p in members)
    course = tuple(p for p in points if p.phase != POST)
    label = measure.display if measure else str(last_obs.get("code", {}).get("text") or key)
    site = next(
        (str(o["bodySite"].get("text", "")) for o, _ in reversed(members) if o.get("bodySite")),
        "",
    )
    latest = course[-1].value if course else None
    return MeasureSeries(
        measure=key,
        label=label,
        site=site,
        unit=unit,
        higher_is_better=higher,
        points=points,
        course=course,
        visits=_visits(points, higher),
        goals=tuple(_goal_progress(goals, finder, key, site_key, latest, higher)),
        mcid=mcids.get(key),
        scale=(float(measure.minimum), float(measure.maximum)) if measure else None,
    )


def _visits(points: tuple[Point, ...], higher: bool | None) -> tuple[VisitEffect, ...]:
    """Per visit (Procedure), the first pre and the last post value."""
    by_visit: dict[str, dict[str, Point]] = {}
    order: list[str] = []
    for p in points:
        if not p.visit or p.phase == UNRECORDED:
            continue
        if p.visit not in by_visit:
            by_visit[p.visit] = {}
            order.append(p.visit)
        slot = by_visit[p.visit]
        if p.phase == PRE:
            slot.setdefault(PRE, p)
        else:
            slot[POST] = p
    out = []
    for visit in order:
        slot = by_visit[visit]
        pre, post = slot.get(PRE), slot.get(POST)
        change = _round(post.value - pre.value) if pre and post else None
        date = (pre or post).date  # type: ignore[union-attr]
        out.append(
            VisitEffect(
                visit=visit,
                date=date,
                pre=pre.value if pre else None,
                post=post.value if post else None,
                change=change,
                direction=_direction(change, higher),
            )
        )
    return tuple(out)


def _goal_progress(
    goals: list[Mapping[str, Any]],
    finder: MeasureFinder,
    key: str,
    site_key: tuple[str, str],
    latest: float | None,
    higher: bool | None,
) -> Iterable[GoalProgress]:
    for goal in goals:
        if goal.get("lifecycleStatus") in ("cancelled", "entered-in-error", "rejected"):
            continue
        for target in goal.get("target") or []:
            measure = target.get("measure") or {}
            wanted = target.get("detailQuantity", {}).get("value")
            if not measure.get("coding") or finder.find(measure)[0] != key:
                continue
            if laterality(measure) != site_key[1] or not isinstance(wanted, int | float | Decimal):
                continue
            met = None
            if latest is not None and higher is not None:
                met = latest >= wanted if higher else latest <= wanted
            yield GoalProgress(
                goal_id=str(goal.get("id", "")),
                description=str(goal.get("description", {}).get("text", "")),
                target=_round(float(wanted)),
                due=str(target.get("dueDate", "")),
                latest=latest,
                met=met,
            )
