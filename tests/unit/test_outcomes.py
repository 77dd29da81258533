"""The outcome engine, table-driven: what a physician reads about a course of treatment."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_bridge.mapping.outcomes import (
    IMPROVED,
    SINGLE,
    UNCHANGED,
    UNJUDGED,
    UNRECORDED,
    WORSENED,
    outcome_series,
    show,
)
from fhir_bridge.mapping.tables import load_tables

TABLES = load_tables()
PHASE = "http://fhir-bridge.org/fhir/StructureDefinition/assessment-phase"
LATERALITY = "http://fhir-bridge.org/fhir/StructureDefinition/body-site-laterality"
MEASURE = "http://fhir-bridge.org/fhir/CodeSystem/massage-measure"
SIDE = "http://fhir-bridge.org/fhir/CodeSystem/massage-laterality"
UNITS = {"pain_nrs": "{score}", "oswestry_disability_index": "{score}"}


def obs(
    oid: str,
    measure: str,
    value: float,
    day: int,
    phase: str | None = "pre",
    *,
    visit: int | None = None,
    site: str | None = None,
    side: str | None = None,
    loinc_only: bool = False,
) -> dict[str, Any]:
    """An Observation as stored; ``phase=None`` has no assessment-phase extension."""
    m = TABLES.measures[measure]
    coding = (
        [{"system": "http://loinc.org", "code": m.loinc.code}] if loinc_only and m.loinc else []
    )
    coding = coding or [{"system": MEASURE, "code": measure}]
    minute = 0 if phase != "post" else 50
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": coding, "text": m.display},
        "effectiveDateTime": f"2026-11-{day:02d}T10:{minute:02d}:00-05:00",
        "valueQuantity": {"value": value, "unit": m.unit.display, "code": m.unit.code},
        "partOf": [{"reference": f"Procedure/v{visit if visit is not None else day}"}],
    }
    if phase:
        body["extension"] = [{"url": PHASE, "valueCode": phase}]
    if site or side:
        body["bodySite"] = {"text": site or f"{side.title()} side"}
        if side:
            body["bodySite"]["extension"] = [
                {
                    "url": LATERALITY,
                    "valueCodeableConcept": {"coding": [{"system": SIDE, "code": side}]},
                }
            ]
    return body


def goal(measure: str, target: float, side: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": MEASURE, "code": measure}]}
    if side:
        concept["extension"] = [
            {
                "url": LATERALITY,
                "valueCodeableConcept": {"coding": [{"system": SIDE, "code": side}]},
            }
        ]
    return {
        "resourceType": "Goal",
        "id": f"g-{measure}",
        "lifecycleStatus": "active",
        "description": {"text": "goal"},
        "target": [
            {"measure": concept, "detailQuantity": {"value": target}, "dueDate": "2027-01-15"}
        ],
    }


def run(observations, goals=()):
    return outcome_series(observations, TABLES.measures, TABLES.mcids, goals)


PAIN_8_7_6 = [
    obs("a", "pain_nrs", 8, 13),
    obs("b", "pain_nrs", 5, 13, "post"),
    obs("c", "pain_nrs", 7, 17),
    obs("d", "pain_nrs", 5, 17, "post"),
    obs("e", "pain_nrs", 6, 24),
    obs("f", "pain_nrs", 3, 24, "post"),
]

CASES = [
    # name, observations, baseline, latest, change, percent, direction, mcid_passed
    ("improvement", PAIN_8_7_6, 8, 6, -2, -25.0, IMPROVED, True),
    (
        "worsening",
        [obs("a", "pain_nrs", 3, 1), obs("b", "pain_nrs", 4, 8)],
        3,
        4,
        1,
        33.3,
        WORSENED,
        False,
    ),
    (
        "no change",
        [obs("a", "pain_nrs", 5, 1), obs("b", "pain_nrs", 5, 8)],
        5,
        5,
        0,
        0.0,
        UNCHANGED,
        False,
    ),
    (
        "single measurement",
        [obs("a", "pain_nrs", 5, 1), obs("b", "pain_nrs", 2, 1, "post")],
        5,
        5,
        0,
        None,
        SINGLE,
        None,
    ),
    (
        "higher is better: range of motion up",
        [obs("a", "cervical_flexion_rom", 35, 1), obs("b", "cervical_flexion_rom", 42.5, 8)],
        35,
        42.5,
        7.5,
        21.4,
        IMPROVED,
        None,  # no published MCID for range of motion
    ),
    (
        "higher is better: function down",
        [
            obs("a", "promis_physical_function_t", 41.3, 1),
            obs("b", "promis_physical_function_t", 40, 8),
        ],
        41.3,
        40,
        -1.3,
        -3.1,
        WORSENED,
        False,
    ),
    (
        "MCID not reached by a small improvement",
        [
            obs("a", "oswestry_disability_index", 40, 1),
            obs("b", "oswestry_disability_index", 32, 8),
        ],
        40,
        32,
        -8,
        -20.0,
        IMPROVED,
        False,
    ),
    (
        "MCID passed",
        [
            obs("a", "oswestry_disability_index", 40, 1),
            obs("b", "oswestry_disability_index", 30, 8),
        ],
        40,
        30,
        -10,
        -25.0,
        IMPROVED,
        True,
    ),
]


@pytest.mark.parametrize(
    ("observations", "baseline", "latest", "change", "percent", "direction", "mcid"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_course_of_one_measure(observations, baseline, latest, change, percent, direction, mcid):
    [series] = run(observations)
    assert (series.baseline.value, series.latest.value) == (baseline, latest)
    assert series.change == change
    assert series.percent_change == percent
    assert series.direction == direction
    assert series.mcid_passed is mcid


def test_walkthrough_pain_course_and_immediate_effects():
    [pain] = run(PAIN_8_7_6)
    assert [p.value for p in pain.course] == [8, 7, 6]
    assert [(v.pre, v.post, v.change, v.direction) for v in pain.visits] == [
        (8, 5, -3, IMPROVED),
        (7, 5, -2, IMPROVED),
        (6, 3, -3, IMPROVED),
    ]
    assert pain.unit == "/10"
    assert pain.show(pain.baseline.value) == "8/10"
    assert pain.show_change(pain.change) == "-2 points"
    assert pain.mcid_status == "MCID 2 points passed"


def test_mixed_body_sites_are_separate_series():
    result = run(
        [
            obs("a", "cervical_rotation_rom", 40, 1, side="left"),
            obs("b", "cervical_rotation_rom", 58, 1, side="right"),
            obs("c", "cervical_rotation_rom", 50, 8, side="left"),
            obs("d", "cervical_rotation_rom", 60, 8, side="right"),
            obs("e", "pain_nrs", 6, 1, site="Neck"),
            obs("f", "pain_nrs", 4, 1, site="Low back"),
        ]
    )
    summary = {(s.measure, s.site): (s.baseline.value, s.latest.value, s.unit) for s in result}
    assert summary == {
        ("cervical_rotation_rom", "Left side"): (40, 50, "degrees"),
        ("cervical_rotation_rom", "Right side"): (58, 60, "degrees"),
        ("pain_nrs", "Neck"): (6, 6, "/10"),
        ("pain_nrs", "Low back"): (4, 4, "/10"),
    }


def test_missing_phase_is_labelled_and_ordered_by_time_never_put_in_a_column():
    loaded = [
        obs("old2", "pain_nrs", 7, 17, None, loinc_only=True),
        obs("old1", "pain_nrs", 8, 13, None, loinc_only=True),
        obs("new", "pain_nrs", 6, 24),
        obs("new-post", "pain_nrs", 3, 24, "post"),
    ]
    [pain] = run(loaded)  # LOINC-only and clinic-coded Observations are one measure
    assert [(p.value, p.phase) for p in pain.course] == [
        (8, UNRECORDED),
        (7, UNRECORDED),
        (6, "pre"),
    ]
    assert pain.course[0].phase_label == "phase not recorded"
    assert pain.phase_unrecorded == 2
    # only the visit with both phases recorded has an immediate effect
    assert [(v.date, v.pre, v.post) for v in pain.visits] == [("2026-11-24", 6, 3)]


def test_post_values_alone_make_no_course():
    [pain] = run([obs("a", "pain_nrs", 3, 1, "post")])
    assert pain.course == ()
    assert pain.baseline is None
    assert pain.direction == UNJUDGED
    assert [(v.pre, v.post, v.change) for v in pain.visits] == [(None, 3, None)]


@pytest.mark.parametrize(
    ("observations", "goal_", "met"),
    [
        pytest.param(PAIN_8_7_6, goal("pain_nrs", 6), True, id="lower is better, reached"),
        pytest.param(PAIN_8_7_6, goal("pain_nrs", 3), False, id="lower is better, not yet"),
        pytest.param(
            [
                obs("a", "cervical_rotation_rom", 40, 1, side="left"),
                obs("b", "cervical_rotation_rom", 72, 8, side="left"),
            ],
            goal("cervical_rotation_rom", 70, "left"),
            True,
            id="higher is better, reached",
        ),
        pytest.param(
            [
                obs("a", "cervical_rotation_rom", 40, 1, side="left"),
                obs("b", "cervical_rotation_rom", 55, 8, side="left"),
            ],
            goal("cervical_rotation_rom", 70, "left"),
            False,
            id="higher is better, not yet",
        ),
    ],
)
def test_goal_met_or_not(observations, goal_, met):
    [series] = run(observations, [goal_])
    [progress] = series.goals
    assert progress.met is met
    assert progress.status == ("met" if met else "not met")


def test_goal_for_the_other_side_is_not_attached():
    [series] = run(
        [obs("a", "cervical_rotation_rom", 58, 1, side="right")],
        [goal("cervical_rotation_rom", 70, "left")],
    )
    assert series.goals == ()


def test_unknown_measure_has_no_direction_and_no_ucum_annotation_shown():
    foreign = obs("x", "pain_nrs", 4, 1)
    foreign["code"] = {
        "coding": [{"system": "http://example.org/other", "code": "q1"}],
        "text": "Other",
    }
    [series] = run([foreign, {**foreign, "id": "y", "effectiveDateTime": "2026-11-09T10:00:00Z"}])
    assert series.direction == UNJUDGED
    assert series.unit == "points"
    assert "{" not in show(series.latest.value, series.unit)


def test_entered_in_error_and_non_numeric_values_are_left_out():
    gone = {**obs("a", "pain_nrs", 9, 1), "status": "entered-in-error"}
    text = obs("b", "pain_nrs", 0, 2)
    del text["valueQuantity"]
    text["valueString"] = "moderate"
    [pain] = run([gone, text, obs("c", "pain_nrs", 5, 3)])
    assert [p.observation_id for p in pain.points] == ["c"]
