"""The console's outcome adapter and chart geometry (pure)."""

from __future__ import annotations

from decimal import Decimal

from fhir_bridge.console.charts import HEIGHT, WIDTH, chart
from fhir_bridge.console.outcome_adapter import measure_series as adapt
from fhir_bridge.mapping.tables import load_tables

TABLES = load_tables()


def measure_series(observations, goals):
    return adapt(observations, goals, TABLES)


MEASURE = "http://fhir-bridge.org/fhir/CodeSystem/massage-measure"
PHASE = "http://fhir-bridge.org/fhir/StructureDefinition/assessment-phase"


def obs(oid, phase, value, at, code="pain_nrs", site=None, status="final"):
    body = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "extension": [{"url": PHASE, "valueCode": phase}],
        "code": {"coding": [{"system": MEASURE, "code": code}], "text": code.replace("_", " ")},
        "effectiveDateTime": at,
        "valueQuantity": {"value": value, "unit": "score"},
    }
    if site:
        body["bodySite"] = {"text": site}
    return body


GOAL = {
    "resourceType": "Goal",
    "lifecycleStatus": "active",
    "description": {"text": "A workday with pain no worse than 2/10"},
    "target": [
        {
            "measure": {"coding": [{"system": MEASURE, "code": "pain_nrs"}]},
            "detailQuantity": {"value": 2},
        }
    ],
}


def test_each_measure_and_site_is_one_series_in_time_order_with_its_goal():
    found = measure_series(
        [
            obs("b", "pre", 6, "2026-11-19T10:00:00Z", site="Neck"),
            obs("a", "pre", 8, "2026-11-12T10:00:00Z", site="Neck"),
            obs("c", "post", Decimal("4.5"), "2026-11-12T11:00:00Z", site="Neck"),
            obs("d", "pre", 5, "2026-11-12T10:00:00Z", site="Lower back"),
            obs("e", "pre", 9, "2026-11-13T10:00:00Z", site="Neck", status="entered-in-error"),
            obs("f", "pre", 40, "2026-11-12T10:00:00Z", code="cervical_rotation_rom"),
        ],
        [GOAL],
    )
    labels = [s.label for s in found]
    assert labels == [
        "Cervical rotation range of motion",
        "Pain, 0-10 numeric rating scale (Lower back)",
        "Pain, 0-10 numeric rating scale (Neck)",
    ]
    assert found[2].unit == "/10"  # the human unit, never a UCUM annotation
    neck = found[2]
    assert [(p.phase, p.value) for p in neck.points] == [("pre", 8), ("post", 4.5), ("pre", 6)]
    assert neck.goal == 2
    assert neck.goal_text.startswith("A workday")
    assert found[0].goal is None


def test_values_without_a_phase_are_charted_as_phase_not_recorded():
    loaded = obs("a", "pre", 7, "2026-11-12T10:00:00Z")
    loaded["extension"] = []  # as sample_bundles/ or another system store them
    (series,) = measure_series([loaded, obs("b", "pre", 5, "2026-11-19T10:00:00Z")], [])
    assert [(p.phase, p.value) for p in series.points] == [("unrecorded", 7), ("pre", 5)]
    c = chart(series)
    assert c.marks[0].title.startswith("2026-11-12 phase not recorded")
    assert c.pre_path.count("L") == 0  # an unrecorded value is never joined as a pre value


def test_the_chart_fits_every_value_and_the_goal_on_round_ticks():
    (series,) = measure_series(
        [
            obs("a", "pre", 8, "2026-11-12T10:00:00Z"),
            obs("b", "post", 5, "2026-11-12T11:00:00Z"),
            obs("c", "pre", 6, "2026-11-19T10:00:00Z"),
        ],
        [GOAL],
    )
    c = chart(series)
    ys = [m.y for m in c.marks] + [c.goal_y]
    assert all(0 < y < HEIGHT for y in ys)
    assert all(0 < m.x < WIDTH for m in c.marks)
    assert c.goal_y > max(m.y for m in c.marks)  # 2 is below every value: lower on the chart
    assert [label for _, label in c.y_ticks] == ["2", "4", "6", "8"]
    assert c.pre_path.count("L") == 1  # two pre-treatment points joined
    assert "8 -> 6" in c.summary
    assert "goal 2" in c.summary


def test_a_single_value_still_gets_a_readable_scale():
    (series,) = measure_series([obs("a", "pre", 4, "2026-11-12T10:00:00Z")], [])
    c = chart(series)
    assert len(c.y_ticks) >= 3
    assert c.marks[0].x == (40 + WIDTH - 12) / 2


def test_indenting_json_keeps_every_token_as_written():
    import json

    from fhir_bridge.console.display import indent_json

    raw = '{"b":1.50,"a":[],"s":"x, {y}: \\"z\\"","n":{"k":[1,{}]}}'
    shown = indent_json(raw)
    assert "1.50" in shown
    assert shown.index('"b"') < shown.index('"a"')  # order kept
    assert json.loads(shown) == json.loads(raw)
    assert '"x, {y}: \\"z\\""' in shown  # strings untouched
    assert '"a": []' in shown
