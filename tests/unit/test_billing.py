"""The CMS 8-minute rule, from the manual's own worked examples."""

from __future__ import annotations

import pytest

from fhir_bridge.mapping.billing import BillingLine, total_units, units_by_code

CPT = "http://www.ama-assn.org/go/cpt"


@pytest.mark.parametrize(
    ("minutes", "units"),
    [
        (0, 0),
        (7, 0),
        (8, 1),
        (22, 1),
        (23, 2),
        (37, 2),
        (38, 3),
        (52, 3),
        (53, 4),
        (67, 4),
        (68, 5),
        (127, 8),
    ],
)
def test_total_units_follow_the_cms_table(minutes, units):
    assert total_units(minutes) == units


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # 33 min 97110 + 7 min 97140 = 40 min -> 3 units: 2 + 1 (7 left over beats 3)
        ([("97110", 33), ("97140", 7)], {"97110": 2, "97140": 1}),
        # 7 + 7 = 14 min -> 1 unit, to one of them only
        ([("97124", 7), ("97140", 8)], {"97124": 0, "97140": 1}),
        # 97140 20 + 15 = 35 min, 97124 15 min -> 50 min = 3 units: 2 + 1
        ([("97140", 20), ("97140", 15), ("97124", 15)], {"97140": 2, "97124": 1}),
        # a single service under 8 minutes bills nothing
        ([("97124", 5)], {"97124": 0}),
        # 18 + 18 = 36 -> 2 units, one each
        ([("97124", 18), ("97140", 18)], {"97124": 1, "97140": 1}),
        # 30 + 8 = 38 min -> 3 units: 97110 has 2 whole ones, its 0 left over loses to 8
        ([("97110", 30), ("97140", 8)], {"97110": 2, "97140": 1}),
        # 25 + 10 = 35 min -> 2 units; 10 left over each: the code with more minutes gets it
        ([("97110", 10), ("97140", 25)], {"97110": 0, "97140": 2}),
    ],
)
def test_units_are_distributed_by_remaining_minutes(entries, expected):
    lines = units_by_code([(CPT, code, mins) for code, mins in entries])
    assert {line.code: line.units for line in lines} == expected
    assert sum(line.units for line in lines) == total_units(sum(m for _, m in entries))


def test_minutes_of_one_code_are_added_up_and_order_is_first_seen():
    lines = units_by_code([(CPT, "97140", 20), (CPT, "97124", 15), (CPT, "97140", 15)])
    assert lines == [BillingLine(CPT, "97140", 35, 2), BillingLine(CPT, "97124", 15, 1)]
