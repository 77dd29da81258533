"""ODI and NDI answered item by item: the published scoring rules, and the record keeping both
the items and the score (or refusing them, with the path)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from fhir_bridge.mapping.tables import load_tables
from fhir_bridge.records.errors import RecordInvalid
from fhir_bridge.records.item_scores import ITEM_RULES, item_problem, item_score
from fhir_bridge.records.openapi import EXAMPLE_RECORD
from fhir_bridge.records.schemas import load_session
from fhir_bridge.records.vocabulary import Vocabulary

VOCABULARY = Vocabulary.from_tables(load_tables())
ODI, NDI = ITEM_RULES["oswestry_disability_index"], ITEM_RULES["neck_disability_index"]


@pytest.mark.parametrize(
    ("rule", "answers", "score"),
    [
        (ODI, [0] * 10, Decimal(0)),
        (ODI, [5] * 10, Decimal(100)),
        (ODI, [2, 3, 1, 2, 2, 1, 3, 2, 2, 2], Decimal(40)),  # 20 / 50
        (ODI, [2, 3, 1, 2, 2, 1, 3, 2, 2, None], Decimal("40")),  # 18 / 45
        (ODI, [1, 1, 1, 1, 1, 1, 1, 1, 2, None], Decimal("22.2")),  # 10 / 45 = 22.22
        (ODI, [1, 1, 1, 1, 1, 1, 1, 2, 2, None], Decimal("24.4")),  # 11 / 45 = 24.44
        (NDI, [1, 2, 3, 0, 1, 2, 3, 0, 1, 2], Decimal(30)),  # 15 x 2
        (NDI, [5] * 10, Decimal(100)),
    ],
)
def test_published_rules(rule, answers, score):
    assert item_problem(rule, answers) is None
    assert item_score(rule, answers) == score


@pytest.mark.parametrize(
    ("rule", "answers", "why"),
    [
        (ODI, [1] * 9, "ODI has 10 items (null for an unanswered one), not 9"),
        (ODI, [1] * 8 + [None, None], "ODI items: 2 unanswered, at most 1 may be"),
        (NDI, [1] * 9 + [None], "NDI items: 1 unanswered, none may be"),
    ],
)
def test_unscorable_answers_say_why(rule, answers, why):
    assert item_problem(rule, answers) == why


def with_assessment(**assessment: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE_RECORD)
    data["assessments"] = [{"phase": "pre", **assessment}]
    data["goals"] = []
    return data


def test_a_record_keeps_the_items_and_their_score():
    items = [2, 3, 1, 2, 2, 1, 3, 2, 2, None]
    rec = load_session(
        with_assessment(measure="oswestry_disability_index", items=items),
        vocabulary=VOCABULARY,
    )
    [a] = rec.assessments
    assert (a.value, a.items) == (Decimal(40), tuple(items))
    both = load_session(
        with_assessment(measure="neck_disability_index", items=[3] * 10, value=60),
        vocabulary=VOCABULARY,
    )
    assert both.assessments[0].value == 60


@pytest.mark.parametrize(
    ("assessment", "path", "message"),
    [
        (
            {"measure": "oswestry_disability_index", "items": [1] * 10, "value": 25},
            "assessments[0].value",
            "does not match the score of its items (20)",
        ),
        (
            {"measure": "pain_nrs", "items": [1] * 10},
            "assessments[0].items",
            "'pain_nrs' is not scored from items",
        ),
        (
            {"measure": "neck_disability_index", "items": [1] * 9 + [None]},
            "assessments[0].items",
            "NDI items: 1 unanswered, none may be",
        ),
        ({"measure": "oswestry_disability_index"}, "assessments[0].value", "is required"),
        (
            {"measure": "oswestry_disability_index", "items": [1] * 9 + [6]},
            "assessments[0].items[9]",
            "must be from 0 to 5",
        ),
    ],
)
def test_bad_items_are_refused_at_their_path(assessment, path, message):
    with pytest.raises(RecordInvalid) as caught:
        load_session(with_assessment(**assessment), vocabulary=VOCABULARY)
    found = {p.path: p.message for p in caught.value.problems}
    assert found.get(path) == message, found


@pytest.mark.parametrize(
    ("answers", "written"), [([5] * 10, "100"), ([1] * 10, "20"), ([0] * 10, "0")]
)
def test_scores_are_written_plainly_not_in_exponent_form(answers, written):
    assert str(item_score(ODI, answers)) == written
