"""The outcome chart as SVG: what a clinician sees in the report and the console."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fhir_bridge.reports.charts import svg_chart
from tests.unit.test_outcomes import PAIN_8_7_6, goal, obs, run

SVG = "{http://www.w3.org/2000/svg}"


def test_pain_chart_has_the_course_the_post_values_the_goal_and_the_mcid_band():
    [pain] = run(PAIN_8_7_6, [goal("pain_nrs", 3)])
    root = ET.fromstring(svg_chart(pain))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts[0] == "Pain, 0-10 numeric rating scale"
    assert {"8", "7", "6"} <= set(texts)  # the course, labelled
    assert "goal 3/10" in texts
    assert "within MCID of baseline" in texts
    assert "score (0-10)" in texts
    [course] = root.iter(f"{SVG}polyline")
    assert len(course.get("points").split()) == 3
    dashed = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 1  # the goal line


def test_unrecorded_phase_is_drawn_hollow_and_text_is_escaped():
    loaded = obs("a", "pain_nrs", 8, 13, None)
    loaded["bodySite"] = {"text": "Neck <left>"}
    [pain] = run([loaded])
    svg = svg_chart(pain)
    root = ET.fromstring(svg)
    assert "phase not recorded" in [t.text for t in root.iter(f"{SVG}text")]
    hollow = [c for c in root.iter(f"{SVG}circle") if c.get("fill") == "#ffffff"]
    assert hollow
    assert "<left>" not in svg
