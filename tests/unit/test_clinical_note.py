"""The HTML note: values in the column of their recorded phase, in units people read."""

from __future__ import annotations

import re

from fhir_bridge.mapping.clinical_note import ChartExtract, note_html
from tests.unit.test_outcomes import obs


def _rows(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in rows]


def _note(observations) -> str:
    procedure = {
        "resourceType": "Procedure",
        "id": "v13",
        "performedPeriod": {"start": "2026-11-13T10:00:00-05:00"},
    }
    extract = ChartExtract(
        patient={"resourceType": "Patient", "id": "p"},
        procedures=[procedure],
        observations=observations,
    )
    return note_html("11506-3", extract, clinic_name="Clinic", written_at="2026-11-30")


def test_before_and_after_in_their_columns_with_human_units():
    page = _note(
        [
            obs("a", "pain_nrs", 8, 13, site="Neck"),
            obs("b", "pain_nrs", 5, 13, "post", site="Neck"),
            obs("c", "cervical_rotation_rom", 40, 13, side="left"),
            obs("d", "cervical_rotation_rom", 55, 13, "post", side="left"),
        ]
    )
    rows = _rows(page)
    assert ["Measure", "Site", "Before", "After"] in rows
    assert ["Pain, 0-10 numeric rating scale", "Neck", "8/10", "5/10"] in rows
    assert ["Cervical rotation range of motion", "Left side", "40 degrees", "55 degrees"] in rows
    assert "{score}" not in page


def test_a_value_without_phase_is_never_put_in_before_or_after():
    loaded = obs("a", "pain_nrs", 8, 13, None, loinc_only=True)
    rows = _rows(_note([loaded]))
    assert ["Measure", "Site", "Before", "After", "Phase not recorded"] in rows
    assert ["Pain, 0-10 numeric rating scale", "", "", "", "8/10"] in rows
