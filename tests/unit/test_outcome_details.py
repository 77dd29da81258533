"""The outcome engine's details a reader sees: goal rows, labels, units, signs and ordering."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_bridge.mapping.outcomes import (
    IMPROVED,
    UNCHANGED,
    UNJUDGED,
    WORSENED,
    MeasureSeries,
    fmt,
    human_unit,
    outcome_series,
    show,
)
from fhir_bridge.mapping.tables import load_tables
from tests.unit.test_outcomes import MEASURE, PAIN_8_7_6, goal, obs

TABLES = load_tables()


def run(observations, goals=()):
    return outcome_series(observations, TABLES.measures, TABLES.mcids, goals)


def pain_goal(**changes: Any) -> dict[str, Any]:
    body = goal("pain_nrs", 6)
    body.update(changes)
    return body


# --- goals --------------------------------------------------------------------------------


def test_a_goal_row_carries_the_goal_as_written():
    [series] = run(PAIN_8_7_6, [goal("pain_nrs", 6.0)])
    [row] = series.goals
    assert (row.goal_id, row.description, row.target, row.due) == (
        "g-pain_nrs",
        "goal",
        6,
        "2027-01-15",
    )
    assert row.latest == 6
    assert row.met is True
    assert row.status == "met"
    assert isinstance(row.target, int)  # 6.0 is shown as 6


def test_a_goal_without_id_description_or_due_date_shows_blanks_not_none():
    bare = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "target": [
            {
                "measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]},
                "detailQuantity": {"value": 3},
            }
        ],
    }
    [series] = run(PAIN_8_7_6, [bare])
    [row] = series.goals
    assert (row.goal_id, row.description, row.due) == ("", "", "")
    assert row.met is False
    assert row.status == "not met"


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "rejected"])
def test_withdrawn_goals_are_not_reported(status):
    [series] = run(PAIN_8_7_6, [pain_goal(lifecycleStatus=status), goal("pain_nrs", 3)])
    assert [row.target for row in series.goals] == [3]


@pytest.mark.parametrize("status", ["proposed", "planned", "accepted", "active", "completed"])
def test_goals_in_other_states_are_reported(status):
    [series] = run(PAIN_8_7_6, [pain_goal(lifecycleStatus=status)])
    assert len(series.goals) == 1


def test_every_target_on_this_measure_is_a_row_and_others_are_skipped():
    many = goal("pain_nrs", 6)
    many["target"] = [
        {"detailQuantity": {"value": 1}},  # no measure
        {"measure": {"text": "pain"}, "detailQuantity": {"value": 2}},  # measure not coded
        {"measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]}},  # no quantity
        {
            "measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]},
            "detailQuantity": {"value": "5"},  # not a number
        },
        {
            "measure": {"coding": [{"system": MEASURE, "code": "oswestry_disability_index"}]},
            "detailQuantity": {"value": 20},
        },
        {
            "measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]},
            "detailQuantity": {"value": 7},
            "dueDate": "2027-02-01",
        },
        {
            "measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]},
            "detailQuantity": {"value": 4},
        },
    ]
    [series] = run(PAIN_8_7_6, [many, goal("pain_nrs", 6)])
    assert [(row.target, row.due, row.met) for row in series.goals] == [
        (7, "2027-02-01", True),
        (4, "", False),
        (6, "2027-01-15", True),
    ]


def test_a_goal_with_no_targets_adds_no_row():
    [series] = run(PAIN_8_7_6, [pain_goal(target=None), pain_goal(target=[])])
    assert series.goals == ()


def test_a_goal_is_met_exactly_at_its_target():
    # lower is better: reaching the target meets it; one point above does not
    [series] = run(PAIN_8_7_6, [goal("pain_nrs", 6), goal("pain_nrs", 5)])
    assert [row.met for row in series.goals] == [True, False]
    # higher is better (range of motion): at the target is met, short of it is not
    rom = [obs("r1", "cervical_rotation_rom", 50, 13), obs("r2", "cervical_rotation_rom", 70, 17)]
    [series] = run(rom, [goal("cervical_rotation_rom", 70), goal("cervical_rotation_rom", 71)])
    assert [row.met for row in series.goals] == [True, False]


def test_a_goal_on_a_measure_with_no_pre_treatment_value_is_not_assessed():
    only_post = [obs("p", "pain_nrs", 4, 13, "post")]
    [series] = run(only_post, [goal("pain_nrs", 6)])
    [row] = series.goals
    assert row.latest is None
    assert row.met is None
    assert row.status == "not assessed"


# --- labels, sites, units -----------------------------------------------------------------


def unknown(oid: str, value: float, day: int, **quantity: Any) -> dict[str, Any]:
    body = obs(oid, "pain_nrs", value, day)
    body["code"] = {"coding": [{"system": "http://example.org/local", "code": "grip"}]}
    body["valueQuantity"] = {"value": value, **quantity}
    return body


def test_an_unknown_measure_is_named_by_its_code_text_or_else_its_key():
    named = unknown("u1", 30, 13, unit="kg", code="kg")
    named["code"]["text"] = "Grip strength"
    [series] = run([named])
    assert series.label == "Grip strength"
    [series] = run([unknown("u2", 30, 13, unit="kg", code="kg")])
    assert series.label == series.measure != "None"
    assert series.scale is None
    assert series.higher_is_better is None


def test_known_measures_keep_their_scale_for_charts():
    [series] = run(PAIN_8_7_6)
    assert series.scale == (0.0, 10.0)


def test_values_with_no_body_site_have_a_blank_site():
    [series] = run(PAIN_8_7_6)
    assert series.site == ""
    assert series.title == series.label


def test_a_value_without_a_code_is_kept_under_an_unnamed_measure():
    # Observation.code is required, but loaded data from other systems can lack it
    codeless = obs("n", "pain_nrs", 4, 13)
    del codeless["code"]
    series = run([codeless, *PAIN_8_7_6])
    unnamed = [s for s in series if s.measure == ""]
    assert [p.value for p in unnamed[0].points] == [4]
    assert unnamed[0].label == ""


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ({"unit": "kilogram", "code": "kg"}, "kilogram"),  # the sender's words win
        ({"code": "kg"}, "kg"),  # else the UCUM code
        ({"unit": "{score}", "code": "kg"}, "points"),  # an annotation is never shown
        ({"unit": "kPa"}, "points"),  # no UCUM code: a score
    ],
)
def test_the_unit_of_an_unknown_measure_is_taken_from_the_last_value(quantity, unit):
    earlier = unknown("u0", 10, 12, unit="lb", code="[lb_av]")
    [series] = run([earlier, unknown("u1", 30, 13, **quantity)])
    assert series.unit == unit


def test_the_site_shown_is_the_latest_one_recorded():
    neck = [{"system": "http://snomed.info/sct", "code": "45048000"}]
    first = obs("a", "pain_nrs", 8, 13, site="Neck")
    later = obs("b", "pain_nrs", 6, 17, site="Neck")
    unsited = obs("c", "pain_nrs", 5, 18)
    first["bodySite"]["coding"] = later["bodySite"]["coding"] = neck
    later["bodySite"]["text"] = "Neck and upper back"
    [series] = run([first, later])
    assert series.site == "Neck and upper back"
    assert series.title == f"{series.label} (Neck and upper back)"
    unsited["bodySite"] = {"coding": neck}
    [series] = run([first, later, unsited])
    assert series.site == ""  # the latest value's site has no text


def test_observation_ids_are_kept_and_missing_ones_are_blank():
    no_id = obs("x", "pain_nrs", 8, 13)
    del no_id["id"]
    [series] = run([no_id, obs("y", "pain_nrs", 7, 17)])
    assert [p.observation_id for p in series.points] == ["", "y"]


def test_values_are_ordered_by_the_instant_they_denote_not_their_text():
    # 10:00-05:00 is 15:00 UTC: after 14:00Z the same day, though it sorts first as text
    late = obs("late", "pain_nrs", 6, 13)
    early = obs("early", "pain_nrs", 8, 13)
    early["effectiveDateTime"] = "2026-11-13T14:00:00Z"
    [series] = run([late, early])
    assert [p.observation_id for p in series.points] == ["early", "late"]


def test_values_at_the_same_instant_in_different_precisions_order_by_their_start():
    # a whole day starts at midnight: before a time that same morning
    day = obs("day", "pain_nrs", 8, 13)
    day["effectiveDateTime"] = "2026-11-13"
    morning = obs("morning", "pain_nrs", 7, 13)
    morning["effectiveDateTime"] = "2026-11-13T00:30:00Z"
    [series] = run([morning, day])
    assert [p.observation_id for p in series.points] == ["day", "morning"]


def test_each_visit_effect_names_its_visit():
    [series] = run(PAIN_8_7_6)
    assert [v.visit for v in series.visits] == ["Procedure/v13", "Procedure/v17", "Procedure/v24"]


# --- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (6.0, "6"), (42.5, "42.5"), (-2.0, "-2"), (0.1 + 0.2, "0.3"), (1e-7, "0")],
)
def test_numbers_are_written_as_people_write_them(value, text):
    assert fmt(value) == text


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (None, "/10", ""),
        (8, "/10", "8/10"),
        (40, "degrees", "40 degrees"),
        (41.3, "points", "41.3 points"),
        (12, "%", "12 %"),
        (3, "", "3"),
    ],
)
def test_values_are_shown_with_their_human_unit(value, unit, text):
    assert show(value, unit) == text


@pytest.mark.parametrize(
    ("ucum", "unit_text", "measure", "unit"),
    [
        ("deg", "degree", None, "degrees"),
        ("%", "percent", None, "%"),
        ("{score}", "score", "pain_nrs", "/10"),
        ("", "", "pain_nrs", "/10"),
        ("{score}", "", "oswestry_disability_index", "points"),
        ("{score}", "", None, "points"),
        ("cm", "centimetre", None, "centimetre"),
        ("cm", "", None, "cm"),
        ("kg", "{kg}", None, "points"),
    ],
)
def test_units_are_what_a_clinician_reads(ucum, unit_text, measure, unit):
    known = TABLES.measures[measure] if measure else None
    assert human_unit(ucum, unit_text, known) == unit


def series_in(unit: str) -> MeasureSeries:
    [series] = run(PAIN_8_7_6)
    return MeasureSeries(**{**series.__dict__, "unit": unit})


@pytest.mark.parametrize(
    ("unit", "value", "text"),
    [
        ("/10", None, ""),
        ("/10", -2, "-2 points"),
        ("/10", 2, "+2 points"),
        ("/10", 1, "+1 point"),
        ("/10", -1, "-1 point"),
        ("/10", 0, "0 points"),
        ("/10", 0.5, "+0.5 points"),
        ("degrees", 1, "+1 degrees"),
        ("degrees", 15, "+15 degrees"),
    ],
)
def test_changes_are_signed_and_counted_in_points_for_scores(unit, value, text):
    assert series_in(unit).show_change(value) == text


@pytest.mark.parametrize(
    ("change", "higher", "direction"),
    [
        (None, True, UNJUDGED),
        (2, None, UNJUDGED),
        (0, True, UNCHANGED),
        (0, False, UNCHANGED),
        (0.5, True, IMPROVED),
        (-0.5, True, WORSENED),
        (-0.5, False, IMPROVED),
        (0.5, False, WORSENED),
    ],
)
def test_direction_of_a_visit_effect(change, higher, direction):
    from fhir_bridge.mapping.outcomes import _direction

    assert _direction(change, higher) == direction
