"""Outcome change per measure: first vs latest pre-treatment value, per body site."""

from __future__ import annotations

from fhir_bridge.mapping.outcome_summary import outcome_changes

PHASE = "http://fhir-bridge.org/fhir/StructureDefinition/assessment-phase"
PAIN = {"coding": [{"system": "http://loinc.org", "code": "72514-3"}], "text": "Pain severity"}


def obs(oid, value, when, phase="pre", site=None):
    body = {
        "resourceType": "Observation",
        "id": oid,
        "extension": [{"url": PHASE, "valueCode": phase}],
        "status": "final",
        "code": PAIN,
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "score",
            "system": "http://unitsofmeasure.org",
            "code": "{score}",
        },
    }
    if site:
        body["bodySite"] = {"text": site}
    return body


def test_first_and_latest_pre_values_per_site_and_post_values_ignored():
    summary = outcome_changes(
        [
            obs("a", 6, "2026-11-03T10:00:00Z", site="Neck"),
            obs("b", 2, "2026-11-03T11:00:00Z", phase="post", site="Neck"),
            obs("c", 8, "2026-11-01T10:00:00Z", site="Neck"),
            obs("d", 3, "2026-11-10T10:00:00Z", site="Neck"),
            obs("e", 5, "2026-11-01T10:00:00Z", site="Low back"),
        ]
    )
    by_site = {s["bodySite"]["text"]: s for s in summary}
    neck = by_site["Neck"]
    assert neck["valueQuantity"]["value"] == -5
    assert neck["valueQuantity"]["code"] == "{score}"
    assert [c["valueQuantity"]["value"] for c in neck["component"]] == [8, 3]
    assert neck["derivedFrom"] == [{"reference": "Observation/c"}, {"reference": "Observation/d"}]
    assert neck["effectivePeriod"] == {
        "start": "2026-11-01T10:00:00Z",
        "end": "2026-11-10T10:00:00Z",
    }
    assert "8 -> 3" in neck["note"][0]["text"]
    assert "3 pre-treatment" in neck["note"][0]["text"]
    back = by_site["Low back"]
    assert back["valueQuantity"]["value"] == 0  # one measurement: no change yet
    assert "coding" not in neck["code"]  # text only: no invented code for "change in"


def test_no_pre_values_no_summary():
    assert outcome_changes([obs("x", 2, "2026-11-03T10:00:00Z", phase="post")]) == []


def test_loaded_observations_without_phase_count_and_are_labelled():
    """The walkthrough bug: two visits loaded without the phase extension, one documented."""
    loaded = [obs("s1", 8, "2026-11-13T10:03:00-05:00"), obs("s2", 7, "2026-11-17T10:02:00-05:00")]
    for o in loaded:
        del o["extension"]
    [pain] = outcome_changes([*loaded, obs("v3", 6, "2026-11-24T09:02:00-05:00")])
    line = pain["note"][0]["text"]
    assert "8 -> 6 /10" in line
    assert "change -2 points, improved; MCID 2 points passed" in line
    assert "3 measurement(s) (1 pre-treatment, 2 phase not recorded)" in line
    assert "{score}" not in line
    assert pain["component"][0]["code"]["text"] == "Baseline value (2026-11-13)"
